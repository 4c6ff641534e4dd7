"""LinkNet (Chaurasia & Culurciello 2017) on any kseg backbone, as segmentation_models' ``Linknet``.

Each decoder level reduces its input to a quarter of the channels (1x1
conv-BN-ReLU), upsamples x2 (nearest, then a 3x3 conv-BN-ReLU; or a learned 4x4
transposed convolution), maps back to the skip's channels (1x1 conv-BN-ReLU)
and *adds* the encoder's feature map at that stride, so the decoder is light.
The levels without a skip (the last, at stride 1) take their filters from
``decoder_filters``; the others from the skip. With ``encoder_features`` the
encoder is segmentation_models' (``kseg.sm.Linknet``), as for
:func:`kseg.models.unet`.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models import backbones as bb
from kseg.models.layers import FusedBatchNormalization, UpsampleConv2D, conv_bn_relu, head
from kseg.models.unet import center_block

UPSAMPLING = ("nearest", "transpose")


def linknet(num_classes: int, backbone: str = "resnet34", input_shape=(None, None, 3), encoder_weights=None,
            encoder_freeze: bool = False, decoder_filters=None, upsampling: str = "nearest",
            decoder_batchnorm: bool = True, activation: str | None = "softmax", backbone_kwargs: dict | None = None,
            name: str | None = None, encoder_features=None, center: bool | None = False):
    """Build a LinkNet.

    Args:
        decoder_filters: filters per decoder level, deepest first; ``None`` at a
            level with a skip (it takes the skip's channels). Default: ``None``
            for every level but the last, 16 there (segmentation_models').
        upsampling: "nearest" (default) or "transpose".
        encoder_features, center: as for :func:`kseg.models.unet`.
        The others as for :func:`kseg.models.unet`.
    """
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
    if encoder_features is not None:
        decoder_filters = tuple(decoder_filters or (None, None, None, None, 16))
        inputs, x, skips, pooled = bb.sm_encoder_skips(backbone, input_shape, encoder_weights, encoder_freeze,
                                                       encoder_features, backbone_kwargs, len(decoder_filters))
        center = pooled if center is None else center
    else:
        inputs, x, skips, levels = bb.encoder_skips(backbone, input_shape, encoder_weights, encoder_freeze,
                                                    backbone_kwargs)
        decoder_filters = tuple(decoder_filters or (None,) * (levels - 1) + (16,))
        bb.check_levels(decoder_filters, levels, backbone)
    for i, (f, skip) in enumerate(zip(decoder_filters, skips)):
        if skip is None and f is None:
            raise ValueError(f"decoder_filters[{i}] is None but decoder level {i} has no skip to take its filters "
                             f"from: give a number")
    if center:
        x = center_block(x, decoder_batchnorm)
    for i, (f, skip) in enumerate(zip(decoder_filters, skips)):
        n = f"decoder_stage{i}"
        quarter = int(x.shape[-1]) // 4
        out = int(skip.shape[-1]) if skip is not None else int(f)
        x = conv_bn_relu(x, quarter, 1, use_batchnorm=decoder_batchnorm, name=f"{n}a")
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(quarter, 4, strides=2, padding="same", use_bias=not decoder_batchnorm,
                                       name=f"{n}b_transpose")(x)
            if decoder_batchnorm:
                x = FusedBatchNormalization(name=f"{n}b_bn")(x)
            x = layers.Activation("relu", name=f"{n}b_relu")(x)
        else:  # nearest upsampling and the 3x3 convolution as one layer, at the low resolution
            x = conv_bn_relu([x], quarter, use_batchnorm=decoder_batchnorm, name=f"{n}b", conv=UpsampleConv2D)
        x = conv_bn_relu(x, out, 1, use_batchnorm=decoder_batchnorm, name=f"{n}c")
        if skip is not None:
            x = layers.Add(name=f"{n}_add")([x, skip])
    outputs = head(x, num_classes, activation)
    return keras.Model(inputs, outputs, name=name or f"linknet_{backbone}")
