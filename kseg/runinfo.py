"""A run's own settings, written by training next to ``best.keras`` as ``run.json``.

``kseg.evaluate`` and ``kseg.predict`` read it so that a user does not repeat the
data, the split, the size, the class names, the palette or the binary threshold
of the run: what the command line gives wins, ``run.json`` fills the rest.

Keys (every one may be absent in an older run folder; readers fall back to the
command line's defaults and say so):

- ``data``, ``data_format`` (``iccv09`` or ``folder``), ``mask`` (iccv09's mask, or ``folder``)
- ``class_names`` (list), ``colors`` (list of [r, g, b] or None), ``binary`` (bool),
  ``threshold`` (float: a binary model's foreground threshold), ``ignore_index``
- ``size`` ([h, w]), ``val_split``, ``seed``, ``fold``, ``limit``
- ``train_ids``, ``val_ids``: the image ids of the split, so evaluation scores exactly the validation images
- ``model``, ``backbone``, ``finished`` (True once every output of the run is written)
- ``versions``: ``{"kseg", "tensorflow", "keras"}``
"""

from __future__ import annotations

import json
from pathlib import Path

from kseg.errors import KsegError, write_text_atomic

RUN_FILE = "run.json"


def versions() -> dict:
    """The versions of kseg, TensorFlow and Keras that this process runs."""
    import keras
    import tensorflow as tf

    import kseg

    return {"kseg": kseg.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def write_run_info(run_dir, info: dict) -> Path:
    """Write ``info`` (plus ``versions``) as ``run_dir/run.json``, atomically."""
    path = Path(run_dir) / RUN_FILE
    data = {**info, "versions": versions()}
    write_text_atomic(path, json.dumps(data, indent=1, default=_plain) + "\n", what="run settings")
    return path


def _plain(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def run_file_for(model_path) -> Path | None:
    """Where a model's ``run.json`` is: beside ``best.keras``, beside (or inside) a SavedModel folder."""
    p = Path(model_path)
    for cand in (p / RUN_FILE, p.parent / RUN_FILE) if p.is_dir() else (p.parent / RUN_FILE,):
        if cand.is_file():
            return cand
    return None


def read_run_info(model_path) -> dict | None:
    """The ``run.json`` that belongs to ``model_path`` (a .keras file, a SavedModel or a run folder), or None.

    A ``run.json`` that is not valid JSON raises :class:`KsegError` naming it."""
    path = run_file_for(model_path)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise KsegError(f"{path}: cannot read the run's settings ({err}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise KsegError(f"{path}: the run's settings are not a JSON object; fix or remove the file")
    data["_path"] = str(path)
    return data
