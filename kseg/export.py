"""Export a trained model: a TensorFlow SavedModel with a serving signature.

``python -m kseg.export --model best.keras --out DIR`` writes ``DIR`` as a
SavedModel whose ``serving_default`` takes a float32 batch of raw RGB images
(N, H, W, 3) in [0, 255] and returns per-pixel class probabilities. The model
carries its own preprocessing, so nothing else is needed to serve it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from kseg.errors import KsegError, cli_entry


def export_saved_model(model, out_dir, verbose: bool = False) -> Path:
    """Write ``model`` as a SavedModel at ``out_dir`` (via a temporary folder, then renamed)."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    except OSError as err:
        raise KsegError(f"{out_dir}: cannot write the export ({err.strerror})") from None
    try:
        model.export(str(tmp), format="tf_saved_model", verbose=verbose)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_model(path):
    """Load a ``.keras`` model (safe mode on) for export, evaluation or prediction."""
    import keras

    import kseg.losses  # noqa: F401  (registers kseg's serialisable losses and metrics)
    import kseg.metrics  # noqa: F401

    path = Path(path)
    if not path.exists():
        raise KsegError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for a file that is not a model
        raise KsegError(f"{path}: not a loadable Keras model ({type(err).__name__}: {err})") from None


@cli_entry
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m kseg.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .keras model file")
    p.add_argument("--out", required=True, help="the SavedModel folder to write")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    model = load_model(args.model)
    out = export_saved_model(model, args.out)
    print(f"kseg: wrote SavedModel {out}")
    return 0


if __name__ == "__main__":
    main()
