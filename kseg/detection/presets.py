"""Named instance models that are ready to predict: ``kseg predict --model maskrcnn-coco photo.jpg``.

:data:`PRESETS` maps a name to a :class:`Preset`: how the model is built with its weights (downloaded
once into the Keras cache and checked, or found in ``$KSEG_WEIGHTS_DIR``; see
:func:`kseg.detection.torchvision_weights.fetch`), its class names, where the weights come from and
the photo sizes its predictor uses. :func:`load_preset` builds one.

- ``maskrcnn-coco``: torchvision's ``maskrcnn_resnet50_fpn`` trained on COCO
  (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``, 91 classes: class ``k`` is COCO category ``k``),
  converted from the official ``.pth`` without PyTorch; photos resized to a short side of 800
  (long side at most 1333), as torchvision does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kseg.detection.coco_names import COCO_CLASSES
from kseg.errors import KsegError


@dataclass(frozen=True)
class Preset:
    build: Callable  # () -> a built model holding the preset's weights
    class_names: tuple
    source: str  # the SOURCES entry of kseg.detection.torchvision_weights the weights come from
    about: str
    min_size: int = 800
    max_size: int = 1333


def _maskrcnn_coco():
    from kseg.detection.maskrcnn import maskrcnn

    return maskrcnn(91, "resnet50", weights="coco")


PRESETS = {
    "maskrcnn-coco": Preset(_maskrcnn_coco, COCO_CLASSES, "coco",
                            "torchvision's maskrcnn_resnet50_fpn, COCO_V1 weights (box AP 37.9, mask AP 34.6 on "
                            "COCO val2017 as torchvision reports them)"),
}


def is_preset(name) -> bool:
    return isinstance(name, str) and name in PRESETS


def load_preset(name: str):
    """``(model, class names, preset)`` of the preset ``name``; the weights are fetched on first use."""
    if name not in PRESETS:
        raise KsegError(f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    return preset.build(), list(preset.class_names), preset
