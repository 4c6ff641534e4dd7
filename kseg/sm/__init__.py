"""segmentation_models compatibility: run the classic tutorial by changing one import.

Replace ``import segmentation_models as sm`` with ``from kseg import sm``; the
names below mean what they mean in segmentation_models 1.0.1:

- ``sm.Unet(backbone_name, input_shape, classes, activation, encoder_weights,
  encoder_freeze, decoder_block_type, decoder_filters, decoder_use_batchnorm)``
- ``sm.get_preprocessing(backbone)``
- ``sm.set_framework(name)`` / ``sm.framework()``
- ``sm.losses``: ``DiceLoss``, ``CategoricalFocalLoss``, ``CategoricalCELoss``,
  ``dice_loss``, ``categorical_focal_loss``, ``categorical_crossentropy``,
  ``categorical_focal_dice_loss``, ``cce_dice_loss``
- ``sm.metrics``: ``IOUScore``, ``FScore``, ``iou_score``, ``f1_score``

One difference, on purpose: kseg models carry their preprocessing inside the
graph (so an exported model takes raw RGB), hence ``get_preprocessing`` returns
a function that only casts to float32 — applying it, as the tutorial does, is
harmless, and so is not applying it.
"""

from __future__ import annotations

import numpy as np

from kseg.sm import losses, metrics  # noqa: F401  (sm.losses.*, sm.metrics.*)
from kseg.sm.models import Unet  # noqa: F401
from kseg.sm import utils  # noqa: F401,E402  (sm.utils.set_regularization, set_trainable)

#: the segmentation_models release whose API (names, arguments, formulas) kseg.sm follows
__version__ = "1.0.1"

_FRAMEWORK = "tf.keras"


def set_framework(name: str) -> None:
    """Accepted for compatibility ("keras" or "tf.keras"); kseg always uses Keras 3."""
    global _FRAMEWORK
    if name not in ("keras", "tf.keras"):
        raise ValueError(f"framework must be 'keras' or 'tf.keras', got {name!r}")
    _FRAMEWORK = name


def framework() -> str:
    return _FRAMEWORK


def get_preprocessing(backbone_name: str):
    """The input preprocessing for ``backbone_name``: a float32 cast (the model normalises itself)."""
    from kseg.models import list_backbones

    if backbone_name not in list_backbones():
        raise ValueError(f"unknown backbone {backbone_name!r}: choose one of {', '.join(list_backbones())}")

    def preprocess_input(x, **kwargs):
        return np.asarray(x, dtype=np.float32)

    return preprocess_input
