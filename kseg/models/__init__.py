"""Models: ``build(name, ...)``, the registry, and one builder per architecture.

>>> model = kseg.models.build("unet", backbone="resnet34", num_classes=3, input_shape=(224, 224, 3))

Architectures: ``list_models()`` (unet, linknet, fpn, fcn32s, fcn16s, fcn8s,
pspnet, segnet, deeplabv3plus, segformer on MiT encoders, hrnet on its own); backbones: ``list_backbones()``; the pairs that build:
``supported_backbones(name)``. ``multiscale(model, mode, train_scales)`` wraps any of them in learned
multi-scale attention (:mod:`kseg.models.multiscale`).
"""

from __future__ import annotations

from kseg import schedules  # noqa: F401  (registers the learning-rate schedules a saved optimizer names)
from kseg.errors import KsegError
from kseg.models import layers  # noqa: F401  (registers kseg's custom layers for .keras loading)
from kseg.models.backbones import list_backbones  # noqa: F401
from kseg.models.deeplab import deeplabv3plus
from kseg.models.fcn import fcn, fcn8s, fcn16s, fcn32s  # noqa: F401
from kseg.models.fpn import fpn
from kseg.models.hrnet import BACKBONES as HRNET_BACKBONES, DEFAULT_BACKBONE as HRNET_DEFAULT, hrnet
from kseg.models.linknet import linknet
from kseg.models.multiscale import multiscale  # noqa: F401  (learned multi-scale attention)
from kseg.models.parts import encoder_layers  # noqa: F401
from kseg.models.pspnet import pspnet
from kseg.models.segformer import segformer
from kseg.models.segnet import segnet
from kseg.models.unet import unet

MODELS = {"unet": unet, "linknet": linknet, "fpn": fpn, "fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s,
          "pspnet": pspnet, "segnet": segnet, "deeplabv3plus": deeplabv3plus}
MODELS["segformer"] = segformer
MODELS["hrnet"] = hrnet

# backbones each architecture supports (SegNet unpools with max-pooling indices: only pooling encoders)
SUPPORTED = {name: ("plain", "vgg16") if name == "segnet" else None for name in MODELS}
SUPPORTED["segformer"] = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")  # MiT encoders only
SUPPORTED["hrnet"] = HRNET_BACKBONES  # its own variants only
# the backbone ``build(name)`` uses when none is given (resnet34 for the others)
DEFAULT_BACKBONES = {"segformer": "mit_b0", "hrnet": HRNET_DEFAULT}


def supported_backbones(name: str) -> list[str]:
    """The backbones architecture ``name`` builds on."""
    if name not in MODELS:
        raise KsegError(f"unknown model {name!r}: choose one of {', '.join(list_models())}")
    return list(SUPPORTED[name] or list_backbones())


def list_models() -> list[str]:
    return sorted(MODELS)


def with_output_stride(model, output_stride: int):
    """A copy of trained ``model`` (same weights) that runs at ``output_stride`` (8, 16 or 32).

    DeepLab's evaluation trick: a DeepLabV3+ trained at output stride 16 evaluated at 8
    (the deeper layers dilated twice as much, the ASPP rates 12/24/36, the decoder's
    upsampling x2): denser features for about 2-3x the compute of the deep layers.
    Models whose decoder upsamples with learned layers past that stride (U-Net,
    SegNet, FCN's transposed convolutions) raise :class:`~kseg.errors.KsegError`.
    """
    from kseg.models.backbones import OUTPUT_STRIDES, atrous

    if output_stride not in OUTPUT_STRIDES:
        raise KsegError(f"bad output stride {output_stride!r}: choose one of {', '.join(map(str, OUTPUT_STRIDES))}")
    from kseg.models.multiscale import is_multiscale

    if is_multiscale(model):
        raise KsegError("--output-stride: a multi-scale model (kseg train --multiscale) runs at its trained stride; "
                        "drop --output-stride")
    return atrous(model, output_stride)


# the backbone build() uses when none is given: resnet34, or the first an architecture supports
DEFAULT_BACKBONE = "resnet34"


def default_backbone(name: str) -> str:
    """The backbone ``build(name)`` uses when none is given (resnet34; segnet: vgg16; segformer: mit_b0; hrnet: hrnet_w18_small_v2)."""
    if name in DEFAULT_BACKBONES:
        return DEFAULT_BACKBONES[name]
    supported = supported_backbones(name)
    return DEFAULT_BACKBONE if DEFAULT_BACKBONE in supported else ("vgg16" if "vgg16" in supported else supported[0])


INSTANCE_ARCHS = ("maskrcnn", "panoptic_fpn")


def _build_instance(name, backbone, num_classes, input_shape, encoder_weights, **kwargs):
    """Mask R-CNN (``kseg.detection.maskrcnn.maskrcnn``) or Panoptic FPN (``panoptic_fpn``, ``num_stuff`` in
    ``kwargs``); the backbone defaults to torchvision's ResNet-50."""
    backbone = backbone or "resnet50"
    if backbone != "resnet50" and encoder_weights is not None:
        kwargs["backbone_weights"] = encoder_weights  # a kseg backbone's own ImageNet weights
    elif encoder_weights is not None:
        kwargs.setdefault("weights", encoder_weights)  # torchvision's ImageNet ResNet-50 file
    if name == "maskrcnn":
        from kseg.detection.maskrcnn import maskrcnn

        return maskrcnn(num_classes=num_classes, backbone=backbone, input_shape=input_shape, **kwargs)
    from kseg.detection.panoptic_fpn import panoptic_fpn

    return panoptic_fpn(num_things=num_classes - 1, backbone=backbone, input_shape=input_shape, **kwargs)


def build(name: str = "unet", backbone: str | None = None, num_classes: int = 3, input_shape=(None, None, 3),
          encoder_weights=None, encoder_freeze: bool = False, activation: str | None = "softmax", **kwargs):
    """Build architecture ``name`` on ``backbone`` (None: :func:`default_backbone`); extra keyword arguments
    go to its builder. ``"maskrcnn"`` and ``"panoptic_fpn"`` build kseg's instance and panoptic models
    (:mod:`kseg.detection`; ``num_classes`` counts the background as torchvision does, ``weights="coco"`` is
    torchvision's COCO Mask R-CNN); the rest of the arguments are the semantic architectures'."""
    if name in INSTANCE_ARCHS:
        return _build_instance(name, backbone, num_classes, input_shape, encoder_weights, **kwargs)
    try:
        fn = MODELS[name]
    except KeyError:
        raise KsegError(f"unknown model {name!r}: choose one of {', '.join(list_models())}") from None
    backbone = default_backbone(name) if backbone is None else backbone
    return fn(num_classes=num_classes, backbone=backbone, input_shape=input_shape,
              encoder_weights=encoder_weights, encoder_freeze=encoder_freeze, activation=activation, **kwargs)
