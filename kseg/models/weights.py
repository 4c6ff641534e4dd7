"""Pretrained encoder weights that kseg loads itself: segmentation_models' ResNet-18/34.

segmentation_models' ``resnet18`` and ``resnet34`` encoders are classification_models'
ResNets, and ``encoder_weights="imagenet"`` gives them the ImageNet weights that
classification_models publishes as release files (``REGISTRY``: the official URL, the
file name and the md5 listed in classification_models' ``weights.py``).
:func:`resolve` turns ``encoder_weights`` into a file on disk:

- ``"imagenet"``: the official file, looked up, in this order, in the folder named by
  ``$KSEG_WEIGHTS_DIR`` (for machines without internet), in the Keras cache
  (``$KERAS_HOME/models``, by default ``~/.keras/models``), and otherwise downloaded
  once into that cache with ``keras.utils.get_file`` (progress bar, md5 check). A file
  found in either folder is used only if its md5 is the published one.
- a path: that file, as it is (no hash check: it may be the user's own weights).

:func:`load` reads a Keras 2 HDF5 weights file (what ``save_weights("x.h5")`` of Keras
2 / tf-keras writes: a ``layer_names`` attribute, one group per layer with a
``weight_names`` attribute and one dataset per weight) with h5py and sets each layer
of the encoder with weights from the file's layer of the same name. Every weight of
the encoder must be in the file with its shape, or nothing is changed and a
:class:`~kseg.errors.KsegError` names the file and the first missing or mismatched
layer; layers of the file that the encoder lacks (a classifier head, a decoder) are
ignored. A file in Keras 3's own formats (``.weights.h5``, ``.keras``) is loaded by Keras.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from kseg.errors import KsegError

ENV_DIR = "KSEG_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightFile:
    """A published weights file: where it is, the name it is kept under, and its published digest
    (``md5``, or ``sha256``, whole or the leading digits torchvision's file names carry; None where kseg knows
    no published one: the URL then pins the revision)."""

    url: str
    fname: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def digest(self) -> tuple[str, str] | None:
        return ("md5", self.md5) if self.md5 else ("sha256", self.sha256) if self.sha256 else None


_RELEASE = "https://github.com/qubvel/classification_models/releases/download/0.0.1/"

# classification_models 1.0.0 (the version segmentation_models 1.0.1 installs), weights.py, WEIGHTS_COLLECTION:
# the include_top=False ImageNet entries of resnet18 and resnet34
REGISTRY: dict[str, WeightFile] = {
    "resnet18": WeightFile(_RELEASE + "resnet18_imagenet_1000_no_top.h5", "resnet18_imagenet_1000_no_top.h5",
                           "318e3ac0cd98d51e917526c9f62f0b50"),
    "resnet34": WeightFile(_RELEASE + "resnet34_imagenet_1000_no_top.h5", "resnet34_imagenet_1000_no_top.h5",
                           "8caaa0ad39d927cb8ba5385bf945d582"),
}


def md5(path) -> str:
    return file_hash(path, "md5")


def file_hash(path, algorithm: str = "sha256") -> str:
    """The hex digest of the file at ``path`` (read in 1 MiB blocks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def keras_cache_dir() -> str:
    """The folder where ``keras.utils.get_file(..., cache_subdir="models")`` keeps downloads: ``$KERAS_HOME/models``
    (created if needed), or ``/tmp/.keras/models`` where that home cannot be written (as Keras does)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        try:
            from keras.src.backend.config import keras_home
            home = keras_home()
        except ImportError:
            home = os.path.join(os.path.expanduser("~"), ".keras")
    home = os.path.expanduser(home)
    with contextlib.suppress(OSError):
        os.makedirs(home, exist_ok=True)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "models")


def _offline_hint(entry: WeightFile) -> str:
    return (f'download {entry.url} where there is internet and pass encoder_weights="/path/{entry.fname}", '
            f"or put the file in ${ENV_DIR}")


def resolve(backbone: str, spec) -> str | None:
    """The weights file for ``encoder_weights=spec`` of ``backbone``: None, "imagenet" or a path."""
    if spec is None:
        return None
    if isinstance(spec, str) and spec == "imagenet":
        return _imagenet(backbone)
    path = os.fspath(spec)
    if not os.path.isfile(path):
        raise KsegError(f"{path}: encoder weights file not found")
    return path


def _imagenet(backbone: str) -> str:
    entry = REGISTRY.get(backbone)
    if entry is None:
        raise KsegError(f"backbone {backbone!r} has no ImageNet weights in kseg; pass a weights file path or None")
    return fetch(entry, f"the ImageNet weights of {backbone}")


def _matches(path: str, entry: WeightFile) -> tuple[bool, str]:
    if entry.digest is None:
        return True, ""
    got = file_hash(path, entry.digest[0])
    return got.startswith(entry.digest[1]), got  # torchvision publishes the first 8 hex digits of a SHA-256


def _mismatch(path, entry: WeightFile, got: str, again: str) -> KsegError:
    algorithm, want = entry.digest
    return KsegError(f"{path}: {algorithm} {got} is not the published {want} of {entry.fname} "
                     f"(an incomplete or different file); {again}download {entry.url} again")


def fetch(entry: WeightFile, what: str, encoder: bool = True) -> str:
    """The local path of ``entry``: found in ``$KSEG_WEIGHTS_DIR`` or the Keras cache with its published
    digest, or downloaded once into that cache with ``keras.utils.get_file`` (progress bar, digest checked).
    A file for which kseg knows no published digest comes from the revision its URL pins, and kseg prints
    the SHA-256 it got. Errors are one line and name the file or URL (``encoder``: the offline hint names
    ``encoder_weights``)."""
    folder = os.environ.get(ENV_DIR)
    if folder:
        path = os.path.join(os.path.expanduser(folder), entry.fname)
        if os.path.isfile(path):
            ok, got = _matches(path, entry)
            if not ok:
                raise _mismatch(path, entry, got, "")
            return path
    cache = keras_cache_dir()
    cached = os.path.join(cache, entry.fname)
    if os.path.isfile(cached) and _matches(cached, entry)[0]:
        return cached  # no network needed
    import keras

    algorithm, want = entry.digest or ("sha256", None)
    if want is not None and len(want) < hashlib.new(algorithm).digest_size * 2:
        want = None  # leading digits only: checked below, get_file compares whole digests
    try:
        path = keras.utils.get_file(entry.fname, origin=entry.url, file_hash=want, hash_algorithm=algorithm,
                                    cache_subdir="models", cache_dir=os.path.dirname(cache))
    except Exception as err:  # get_file raises a bare Exception for network errors, ValueError for a bad hash
        if os.path.isfile(cached) and not _matches(cached, entry)[0]:  # never leave a wrong file in the cache
            with contextlib.suppress(OSError):
                os.remove(cached)
        reason = " ".join(str(err).split()) or type(err).__name__
        hint = _offline_hint(entry) if encoder else (f"download {entry.url} where there is internet and put it "
                                                     f"in ${ENV_DIR} as {entry.fname}")
        raise KsegError(f"cannot download {what} ({reason}); {hint}") from None
    ok, got = _matches(path, entry)
    if not ok:  # never left in the cache
        with contextlib.suppress(OSError):
            os.remove(path)
        raise _mismatch(path, entry, got, "removed it: ")
    if entry.digest is None:
        import sys

        print(f"kseg: {entry.url}: no published checksum is pinned in kseg for this file (its revision is); "
              f"SHA-256 {file_hash(path)}; every tensor's name and shape is checked as it loads", file=sys.stderr)
    return path


# --------------------------------------------------------------------------- Keras 2 HDF5 weights files

def _attr_list(group, name) -> list[str] | None:
    """A list-of-strings attribute, also when Keras split it into ``name0``, ``name1``, ... (large headers)."""
    if name in group.attrs:
        values = list(group.attrs[name])
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(group.attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def is_keras2_h5(path) -> bool:
    """Whether ``path`` is an HDF5 file in the layout of Keras 2's ``save_weights`` / ``save`` (``layer_names``)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            g = f["model_weights"] if "model_weights" in f else f
            return _attr_list(g, "layer_names") is not None
    except (OSError, KeyError):
        return False


def _basename(weight_name: str) -> str:
    """``"stage1_unit1_bn1/gamma:0"`` -> ``"gamma"``."""
    base = weight_name.rsplit("/", 1)[-1]
    return base.rsplit(":", 1)[0]


def read_keras2_h5(path, layer_names) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``{layer: [(weight name, array), ...]}`` from a Keras 2 HDF5 weights file, for ``layer_names``
    found in it (absent layers are left out)."""
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            g = f["model_weights"] if "model_weights" in f else f
            names = _attr_list(g, "layer_names")
            if names is None:
                raise KsegError(f"{path}: not a Keras 2 HDF5 weights file (no 'layer_names' attribute)")
            present = set(names)
            for layer in layer_names:
                if layer not in present or layer not in g:
                    continue
                lg = g[layer]
                weight_names = _attr_list(lg, "weight_names") or []
                out[layer] = [(w, np.asarray(lg[w])) for w in weight_names]
    except OSError as err:
        raise KsegError(f"{path}: cannot read the weights file ({' '.join(str(err).split())})") from None
    except KeyError as err:
        raise KsegError(f"{path}: the weights file is incomplete ({err})") from None
    return out


def _match(layer, stored: list[tuple[str, np.ndarray]]):
    """The file's arrays in the order of ``layer.weights``: by weight name (gamma, beta, kernel, ...) when the
    file's names are the layer's, otherwise in Keras 2's order (trainable weights, then the others)."""
    names = [v.name for v in layer.weights]
    by_name = {_basename(n): a for n, a in stored}
    if len(by_name) == len(stored) and sorted(by_name) == sorted(names):
        return [by_name[n] for n in names]
    legacy = [v.name for v in layer.trainable_weights + layer.non_trainable_weights]
    if len(stored) != len(names):
        return None
    arrays = dict(zip(legacy, (a for _, a in stored)))
    return [arrays[n] for n in names]


def load_keras2_h5(model, path, what: str) -> None:
    """Set every layer of ``model`` that has weights from the layer of the same name in Keras 2 HDF5 file
    ``path``; all or nothing (``what`` names the model in messages)."""
    targets = [layer for layer in model.layers if layer.weights]
    stored = read_keras2_h5(path, [layer.name for layer in targets])
    plan = []
    for layer in targets:
        if layer.name not in stored:
            raise KsegError(f"{path}: layer {layer.name!r} of the {what} is not in the file "
                            f"({len(stored)} of its {len(targets)} layers with weights are)")
        arrays = _match(layer, stored[layer.name])
        want = [tuple(v.shape) for v in layer.weights]
        if arrays is None or [a.shape for a in arrays] != want:
            got = [tuple(a.shape) for _, a in stored[layer.name]]
            raise KsegError(f"{path}: layer {layer.name!r} holds weights of shapes {got}, the {what} needs {want}")
        plan.append((layer, arrays))
    for layer, arrays in plan:
        for var, a in zip(layer.weights, arrays):
            var.assign(np.asarray(a, dtype=var.dtype))


def load(model, spec, backbone: str) -> None:
    """Load ``encoder_weights=spec`` (None, "imagenet" or a path) into encoder sub-model ``model``."""
    path = resolve(backbone, spec)
    if path is None:
        return
    if path.endswith((".weights.h5", ".keras")) and not is_keras2_h5(path):  # Keras 3's own formats
        from kseg.models.backbones import load_encoder_weights

        load_encoder_weights(model, path, backbone)
    else:
        load_keras2_h5(model, path, f"{backbone} encoder")
