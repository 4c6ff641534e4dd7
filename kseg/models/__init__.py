"""Models: ``build(name, ...)``, the registry, and one builder per architecture.

>>> model = kseg.models.build("unet", backbone="resnet34", num_classes=3, input_shape=(224, 224, 3))
"""

from __future__ import annotations

from kseg.errors import KsegError
from kseg.models.backbones import list_backbones  # noqa: F401
from kseg.models.unet import unet

MODELS = {"unet": unet}


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
