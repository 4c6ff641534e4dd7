"""segmentation_models' model builders (``sm.Unet``), built by :mod:`kseg.models`."""

from __future__ import annotations

from kseg.models import build as _build


def Unet(backbone_name="vgg16", input_shape=(None, None, 3), classes=1, activation="sigmoid",
         weights=None, encoder_weights="imagenet", encoder_freeze=False,
         encoder_features="default", decoder_block_type="upsampling",
         decoder_filters=(256, 128, 64, 32, 16), decoder_use_batchnorm=True, **kwargs):
    """segmentation_models' ``Unet`` signature, built by :func:`kseg.models.unet`."""
    if encoder_features != "default":
        raise ValueError("kseg's sm.Unet supports encoder_features='default' only")
    upsampling = {"upsampling": "nearest", "transpose": "transpose"}.get(decoder_block_type)
    if upsampling is None:
        raise ValueError("decoder_block_type must be 'upsampling' or 'transpose'")
    model = _build("unet", backbone=backbone_name, num_classes=classes, input_shape=input_shape,
                   encoder_weights=encoder_weights, encoder_freeze=encoder_freeze, activation=activation,
                   decoder_filters=tuple(decoder_filters), upsampling=upsampling,
                   decoder_batchnorm=decoder_use_batchnorm)
    if weights is not None:
        model.load_weights(weights)
    return model
