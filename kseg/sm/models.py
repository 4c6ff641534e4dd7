"""segmentation_models 1.0.1's model builders (``sm.Unet``, ``sm.Linknet``, ``sm.FPN``, ``sm.PSPNet``).

Same signatures and defaults, and for the same arguments the same layers and
parameter counts as segmentation_models, built by :mod:`kseg.models` on
segmentation_models' encoders (:func:`kseg.models.backbones.sm_encoder`):
vgg16/vgg19 (with U-Net's and Linknet's centre block after the last pooling),
resnet18/34/50/101/152 in classification_models' layout, mobilenet,
mobilenetv2 and efficientnetb0 (keras.applications'). ``encoder_freeze``
freezes the encoder but its batch normalisations, as segmentation_models does.
Every option is honoured or refused: a backbone, an argument or a value kseg
cannot honour raises a one-line :class:`ValueError` saying so.
"""

from __future__ import annotations

from kseg.models.backbones import SmOptionError, sm_backbones

# every backbone name segmentation_models 1.0.1 offers (sm.get_available_backbone_names())
SM_BACKBONES = (
    "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "seresnet18", "seresnet34",
    "seresnet50", "seresnet101", "seresnet152", "resnext50", "resnext101", "seresnext50", "seresnext101",
    "senet154", "densenet121", "densenet169", "densenet201", "inceptionv3", "inceptionresnetv2", "mobilenet",
    "mobilenetv2", "efficientnetb0", "efficientnetb1", "efficientnetb2", "efficientnetb3", "efficientnetb4",
    "efficientnetb5", "efficientnetb6", "efficientnetb7",
)


def check_backbone(name) -> None:
    """A one-line ValueError unless kseg.sm builds backbone ``name``."""
    if name in sm_backbones():
        return
    if name in SM_BACKBONES:
        raise SmOptionError(f"kseg.sm does not provide backbone {name!r}: choose one of {', '.join(sm_backbones())}")
    raise SmOptionError(f"unknown backbone {name!r}: kseg.sm provides {', '.join(sm_backbones())}")


def _no_extra(model: str, kwargs: dict) -> None:
    if kwargs:
        raise SmOptionError(f"kseg.sm.{model} does not accept {', '.join(map(repr, sorted(kwargs)))} (segmentation_"
                            f"models passes extra arguments to its backbone; kseg's backbones take none)")


def _block_type(decoder_block_type) -> str:
    upsampling = {"upsampling": "nearest", "transpose": "transpose"}.get(decoder_block_type)
    if upsampling is None:
        raise SmOptionError(f"decoder_block_type must be 'upsampling' or 'transpose', got {decoder_block_type!r}")
    return upsampling


def _features(encoder_features):
    if encoder_features == "default":
        return "default"
    if isinstance(encoder_features, (str, int)):
        raise SmOptionError(f"encoder_features must be 'default' or a list of layer names or indexes, got "
                            f"{encoder_features!r}")
    return list(encoder_features)


def _finish(model, weights):
    if weights is not None:
        model.load_weights(weights)
    return model


def Unet(backbone_name="vgg16", input_shape=(None, None, 3), classes=1, activation="sigmoid", weights=None,
         encoder_weights="imagenet", encoder_freeze=False, encoder_features="default",
         decoder_block_type="upsampling", decoder_filters=(256, 128, 64, 32, 16), decoder_use_batchnorm=True,
         **kwargs):
    """segmentation_models' ``Unet``, built by :func:`kseg.models.unet`."""
    from kseg.models.unet import unet

    _no_extra("Unet", kwargs)
    check_backbone(backbone_name)
    model = unet(classes, backbone=backbone_name, input_shape=input_shape, encoder_weights=encoder_weights,
                 encoder_freeze=encoder_freeze, decoder_filters=tuple(decoder_filters),
                 upsampling=_block_type(decoder_block_type), decoder_batchnorm=decoder_use_batchnorm,
                 activation=activation, encoder_features=_features(encoder_features), center=None)
    return _finish(model, weights)


def Linknet(backbone_name="vgg16", input_shape=(None, None, 3), classes=1, activation="sigmoid", weights=None,
            encoder_weights="imagenet", encoder_freeze=False, encoder_features="default",
            decoder_block_type="upsampling", decoder_filters=(None, None, None, None, 16),
            decoder_use_batchnorm=True, **kwargs):
    """segmentation_models' ``Linknet``, built by :func:`kseg.models.linknet`."""
    from kseg.models.linknet import linknet

    _no_extra("Linknet", kwargs)
    check_backbone(backbone_name)
    model = linknet(classes, backbone=backbone_name, input_shape=input_shape, encoder_weights=encoder_weights,
                    encoder_freeze=encoder_freeze, decoder_filters=tuple(decoder_filters),
                    upsampling=_block_type(decoder_block_type), decoder_batchnorm=decoder_use_batchnorm,
                    activation=activation, encoder_features=_features(encoder_features), center=None)
    return _finish(model, weights)


def FPN(backbone_name="vgg16", input_shape=(None, None, 3), classes=21, activation="softmax", weights=None,
        encoder_weights="imagenet", encoder_freeze=False, encoder_features="default", pyramid_block_filters=256,
        pyramid_use_batchnorm=True, pyramid_aggregation="concat", pyramid_dropout=None, **kwargs):
    """segmentation_models' ``FPN``, built by :func:`kseg.models.fpn`."""
    from kseg.models.fpn import AGGREGATIONS, fpn

    _no_extra("FPN", kwargs)
    check_backbone(backbone_name)
    if pyramid_aggregation not in AGGREGATIONS:
        raise SmOptionError(f"pyramid_aggregation must be 'concat' or 'sum', got {pyramid_aggregation!r}")
    model = fpn(classes, backbone=backbone_name, input_shape=input_shape, encoder_weights=encoder_weights,
                encoder_freeze=encoder_freeze, pyramid_filters=pyramid_block_filters,
                segmentation_filters=pyramid_block_filters // 2, pyramid_batchnorm=pyramid_use_batchnorm,
                aggregation=pyramid_aggregation, dropout=pyramid_dropout, activation=activation,
                encoder_features=_features(encoder_features))
    return _finish(model, weights)


def PSPNet(backbone_name="vgg16", input_shape=(384, 384, 3), classes=21, activation="softmax", weights=None,
           encoder_weights="imagenet", encoder_freeze=False, downsample_factor=8, psp_conv_filters=512,
           psp_pooling_type="avg", psp_use_batchnorm=True, psp_dropout=None, **kwargs):
    """segmentation_models' ``PSPNet``, built by :func:`kseg.models.pspnet.pspnet_sm` (input sizes multiples of
    ``6 * downsample_factor``, e.g. 48 at the default 8)."""
    from kseg.models.pspnet import pspnet_sm

    _no_extra("PSPNet", kwargs)
    check_backbone(backbone_name)
    model = pspnet_sm(classes, backbone=backbone_name, input_shape=input_shape, encoder_weights=encoder_weights,
                      encoder_freeze=encoder_freeze, activation=activation, downsample_factor=downsample_factor,
                      conv_filters=psp_conv_filters, pooling=psp_pooling_type, batchnorm=psp_use_batchnorm,
                      dropout=psp_dropout)
    return _finish(model, weights)


def get_available_backbone_names() -> list[str]:
    """The backbones kseg.sm builds (segmentation_models' names)."""
    return sm_backbones()
