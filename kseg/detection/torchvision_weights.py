"""torchvision's Mask R-CNN and ResNet-50 weights in kseg's Mask R-CNN.

``SOURCES`` names the official files: torchvision's COCO-trained ``maskrcnn_resnet50_fpn``
(``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``) and its ImageNet ResNet-50
(``ResNet50_Weights.IMAGENET1K_V1``). :func:`fetch` finds one in ``$KSEG_WEIGHTS_DIR``, in the
Keras cache, or downloads it once into that cache (``keras.utils.get_file``, progress bar) and
checks it as torchvision does: the file name carries the first 8 hex digits of its SHA-256.

:func:`load_torchvision` reads the ``.pth`` without PyTorch (:mod:`kseg.detection.torch_pickle`)
and copies each tensor into the layer of the same module path (``backbone.body.layer1.0.conv1``
-> ``layer1_0_conv1``): convolution kernels OIHW -> HWIO, transposed-convolution kernels
IOHW -> HWOI, dense weights transposed, ``fc6`` permuted from torchvision's (channel, y, x)
flattening to kseg's NHWC (y, x, channel); batch norm as (weight, bias, running_mean,
running_var). Every weight of the model must be in the file with its shape, or nothing is
changed and a one-line :class:`~kseg.errors.KsegError` names the file and the first problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from kseg.errors import KsegError
from kseg.models.weights import ENV_DIR, file_hash


@dataclass(frozen=True)
class TorchFile:
    url: str
    prefix: str  # the module path the file's keys start with for kseg's pyramid

    @property
    def fname(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def sha256_prefix(self) -> str:
        return self.fname.rsplit("-", 1)[1].split(".")[0]


SOURCES = {
    "coco": TorchFile("https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", "backbone.body."),
    "imagenet": TorchFile("https://download.pytorch.org/models/resnet50-0676ba61.pth", ""),
}


def sha256(path) -> str:
    return file_hash(path, "sha256")


def fetch(source: str) -> str:
    """The local path of ``SOURCES[source]``: found (checked) or downloaded once into the Keras cache."""
    import keras

    spec = SOURCES[source]
    home = os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))  # read now: Keras reads it once, at import
    folders = [os.environ.get(ENV_DIR), os.path.join(home, "models")]
    for folder in filter(None, folders):
        path = os.path.join(folder, spec.fname)
        if os.path.isfile(path):
            if not sha256(path).startswith(spec.sha256_prefix):
                raise KsegError(f"{path}: its SHA-256 does not start with {spec.sha256_prefix} as the official "
                                f"file's does; delete it or download {spec.url} again")
            return path
    try:
        os.makedirs(home, exist_ok=True)  # Keras falls back to /tmp/.keras when the folder is not there yet
        path = keras.utils.get_file(spec.fname, spec.url, cache_dir=home, cache_subdir="models")
    except Exception as exc:  # noqa: BLE001 - any network failure is one line for the user
        raise KsegError(f"could not download {spec.url} ({exc}); put the file in ${ENV_DIR} to work offline") from None
    if not sha256(path).startswith(spec.sha256_prefix):
        os.remove(path)
        raise KsegError(f"{spec.url}: the downloaded file's SHA-256 does not start with {spec.sha256_prefix}; "
                        "removed it, try again")
    return path


def _kernel(w: np.ndarray) -> np.ndarray:
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO (IOHW -> HWOI for a transposed convolution)
    return w.T


def _fc6(w: np.ndarray, channels: int, size: int) -> np.ndarray:
    out = w.shape[0]
    return w.reshape(out, channels, size, size).transpose(0, 2, 3, 1).reshape(out, -1).T


def _layer_arrays(layer, path: str, sd: dict, origin: str) -> list[np.ndarray]:
    """The arrays for ``layer`` from the state dict entries under module ``path``."""
    from keras import layers

    if isinstance(layer, layers.BatchNormalization):
        names = ("weight", "bias", "running_mean", "running_var")
    else:
        names = ("weight", "bias")[: len(layer.weights)]
    missing = [f"{path}.{n}" for n in names if f"{path}.{n}" not in sd]
    if missing:
        raise KsegError(f"{origin}: has no weights for {missing[0]} (kseg layer {layer.name})")
    arrays = [sd[f"{path}.{n}"] for n in names]
    if names[0] == "weight" and not isinstance(layer, layers.BatchNormalization):
        w = arrays[0]
        arrays[0] = _fc6(w, 256, 7) if path.endswith("box_head.fc6") and w.ndim == 2 else _kernel(w)
    return arrays


def module_paths(model, prefix: str) -> dict:
    """kseg layer -> torchvision module path, for every layer of ``model`` (a Mask R-CNN) with weights."""
    paths = {}
    for layer in model.pyramid.layers:
        if not layer.weights or layer.name == "normalize":
            continue
        if layer.name.startswith("fpn_"):
            paths[layer] = "backbone.fpn." + _dotted_fpn(layer.name[4:])
        else:
            paths[layer] = prefix + layer.name.replace("_", ".")
    paths.update(_head_paths(model))
    return paths


def _dotted_fpn(name: str) -> str:
    kind, rest = name.split("_blocks_")  # inner_blocks_0_0 -> inner_blocks.0.0
    return f"{kind}_blocks." + rest.replace("_", ".")


def _head_paths(model) -> dict:
    rpn, box, mask = model.rpn_head, model.box_head, model.mask_head
    paths = {rpn.conv: "rpn.head.conv.0.0", rpn.cls_logits: "rpn.head.cls_logits", rpn.bbox_pred: "rpn.head.bbox_pred",
             box.fc6: "roi_heads.box_head.fc6", box.fc7: "roi_heads.box_head.fc7",
             box.cls_score: "roi_heads.box_predictor.cls_score", box.bbox_pred: "roi_heads.box_predictor.bbox_pred",
             mask.conv5_mask: "roi_heads.mask_predictor.conv5_mask",
             mask.mask_fcn_logits: "roi_heads.mask_predictor.mask_fcn_logits"}
    paths.update({conv: f"roi_heads.mask_head.{i}.0" for i, conv in enumerate(mask.convs)})
    return paths


def load_torchvision(model, path, source: str = "coco") -> None:
    """Copy torchvision's weights from the ``.pth`` at ``path`` into ``model`` (see the module's docstring).

    ``source="coco"`` loads a whole Mask R-CNN state dict; ``"imagenet"`` a ResNet-50 classifier's,
    into the backbone only (its ``fc`` is ignored)."""
    from kseg.detection.torch_pickle import read_state_dict

    load_state_dict(model, read_state_dict(path), source, origin=str(path))


def load_state_dict(model, sd: dict, source: str = "coco", origin: str = "state dict") -> None:
    """:func:`load_torchvision` from a state dict already read (``{name: array}``); ``origin`` names it in errors."""
    paths = module_paths(model, SOURCES[source].prefix)
    if source == "imagenet":
        paths = {layer: p for layer, p in paths.items() if not p.startswith(("backbone.fpn", "rpn.", "roi_heads."))}
    todo = []
    for layer, p in paths.items():
        arrays = _layer_arrays(layer, p, sd, origin)
        have = [tuple(v.shape) for v in layer.get_weights()]
        if have != [a.shape for a in arrays]:
            raise KsegError(f"{origin}: {p} has shapes {[a.shape for a in arrays]}, kseg's {layer.name} needs {have}")
        todo.append((layer, arrays))
    for layer, arrays in todo:
        layer.set_weights([np.asarray(a, np.float32) for a in arrays])
