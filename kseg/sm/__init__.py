"""segmentation_models compatibility: run the classic tutorial by changing one import.

Replace ``import segmentation_models as sm`` with ``from kseg import sm``; the
names below mean what they mean in segmentation_models 1.0.1:

- ``sm.Unet``, ``sm.Linknet``, ``sm.FPN``, ``sm.PSPNet``: the same signatures,
  defaults, layers and parameter counts (:mod:`kseg.sm.models`), on the
  backbones ``sm.get_available_backbone_names()`` lists
- ``sm.get_preprocessing(backbone)``
- ``sm.set_framework(name)`` ("keras" or "tf.keras", any case) / ``sm.framework()``
- ``sm.losses``: every loss of segmentation_models' ``losses`` module, binary and categorical, with its
  formulas and names (:mod:`kseg.sm.losses`)
- ``sm.metrics``: ``IOUScore``, ``FScore``, ``Precision``, ``Recall`` and the ready-made objects
  (:mod:`kseg.sm.metrics`)
- ``sm.utils.set_regularization``; ``sm.__version__`` ("1.0.1", the API followed)

One difference, on purpose: kseg models carry their preprocessing inside the
graph (so an exported model takes raw RGB), hence ``get_preprocessing`` returns
a function that only casts to float32 — applying it, as the tutorial does, is
harmless, and so is not applying it.
"""

from __future__ import annotations

import numpy as np

from kseg.sm import losses, metrics, utils  # noqa: F401  (sm.losses.*, sm.metrics.*, sm.utils.*)
from kseg.sm.models import FPN, Linknet, PSPNet, Unet, get_available_backbone_names  # noqa: F401

#: the segmentation_models release whose API (names, arguments, formulas) kseg.sm follows
__version__ = "1.0.1"

_FRAMEWORK = "tf.keras"


def set_framework(name: str) -> None:
    """Accepted for compatibility ("keras" or "tf.keras", case-insensitive); kseg always uses Keras 3."""
    global _FRAMEWORK
    lowered = name.lower() if isinstance(name, str) else name
    if lowered not in ("keras", "tf.keras"):
        raise ValueError(f"framework must be 'keras' or 'tf.keras', got {name!r}")
    _FRAMEWORK = lowered


def framework() -> str:
    return _FRAMEWORK


def get_preprocessing(backbone_name: str):
    """The input preprocessing for ``backbone_name``: a float32 cast (the model normalises itself)."""
    from kseg.sm.models import check_backbone

    check_backbone(backbone_name)

    def preprocess_input(x, **kwargs):
        return np.asarray(x, dtype=np.float32)

    return preprocess_input
