"""Models: ``build(name, ...)``, the registry, and one builder per architecture.

>>> model = kseg.models.build("unet", backbone="resnet34", num_classes=3, input_shape=(224, 224, 3))

Architectures: ``list_models()`` (unet, fcn32s, fcn16s, fcn8s, pspnet, segnet,
deeplabv3plus); backbones: ``list_backbones()``; the pairs that build:
``supported_backbones(name)``.
"""

from __future__ import annotations

from kseg import schedules  # noqa: F401  (registers the learning-rate schedules a saved optimizer names)
from kseg.errors import KsegError
from kseg.models import layers  # noqa: F401  (registers kseg's custom layers for .keras loading)
from kseg.models.backbones import list_backbones  # noqa: F401
from kseg.models.deeplab import deeplabv3plus
from kseg.models.fcn import fcn, fcn8s, fcn16s, fcn32s  # noqa: F401
from kseg.models.pspnet import pspnet
from kseg.models.segnet import segnet
from kseg.models.unet import unet

MODELS = {"unet": unet, "fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s, "pspnet": pspnet, "segnet": segnet,
          "deeplabv3plus": deeplabv3plus}

# backbones each architecture supports (SegNet unpools with max-pooling indices: only pooling encoders)
SUPPORTED = {name: ("plain", "vgg16") if name == "segnet" else None for name in MODELS}


def supported_backbones(name: str) -> list[str]:
    """The backbones architecture ``name`` builds on."""
    if name not in MODELS:
        raise KsegError(f"unknown model {name!r}: choose one of {', '.join(list_models())}")
    return list(SUPPORTED[name] or list_backbones())


def list_models() -> list[str]:
    return sorted(MODELS)


def build(name: str = "unet", backbone: str = "resnet34", num_classes: int = 3, input_shape=(None, None, 3),
          encoder_weights=None, encoder_freeze: bool = False, activation: str | None = "softmax", **kwargs):
    """Build architecture ``name`` on ``backbone``; extra keyword arguments go to its builder."""
    try:
        fn = MODELS[name]
    except KeyError:
        raise KsegError(f"unknown model {name!r}: choose one of {', '.join(list_models())}") from None
    return fn(num_classes=num_classes, backbone=backbone, input_shape=input_shape,
              encoder_weights=encoder_weights, encoder_freeze=encoder_freeze, activation=activation, **kwargs)
