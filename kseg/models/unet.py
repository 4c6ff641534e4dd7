"""U-Net (Ronneberger et al. 2015) on any kseg backbone.

The decoder follows segmentation_models' ``Unet``: at each level, upsample x2,
concatenate the encoder's feature map at that stride (when there is one), then
two 3x3 conv-BN-ReLU. With the ``resnet34`` backbone and the defaults it has
exactly the weights and parameter count of ``sm.Unet("resnet34")`` and computes
the same function; with the ``plain`` backbone it is the paper's network (plus
batch normalisation). With nearest upsampling (the default) the upsampling,
the concatenation and the first convolution of each level are one
:class:`~kseg.models.layers.UpsampleConv2D`, which computes them at the low
resolution (fewer multiply-adds, no upsampled tensors kept for the gradient).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models import backbones as bb
from kseg.models.layers import BilinearUpSampling2D, FusedBatchNormalization, UpsampleConv2D, conv_bn_relu, head

UPSAMPLING = ("nearest", "bilinear", "transpose")


def unet(num_classes: int, backbone: str = "resnet34", input_shape=(None, None, 3), encoder_weights=None,
         encoder_freeze: bool = False, decoder_filters=None, upsampling: str = "nearest",
         decoder_batchnorm: bool = True, activation: str | None = "softmax", backbone_kwargs: dict | None = None,
         name: str | None = None, encoder_features=None, center: bool | None = False):
    """Build a U-Net as a Keras functional model.

    Args:
        num_classes: output channels.
        backbone: a name from :func:`kseg.models.list_backbones`.
        input_shape: (H, W, C); H and W multiples of 32 or None.
        encoder_weights: None, "imagenet" (where the backbone has them) or a weights file.
        encoder_freeze: make the encoder's layers non-trainable.
        decoder_filters: filters per decoder level, deepest first; default
            (256, 128, 64, 32, 16) for 5 levels, (512, 256, 128, 64) for 4 (plain).
        upsampling: "nearest" (segmentation_models' default), "bilinear", or
            "transpose" (a learned 4x4 transposed convolution).
        activation: "softmax" (default), "sigmoid", or None for logits.
        backbone_kwargs: extra arguments for the backbone (e.g. ``filters`` of plain).
        encoder_features: None: the skips are the backbone's feature maps at every
            stride. Otherwise segmentation_models' encoder (``kseg.sm``): "default"
            (its four default layers) or layer names / indexes, deepest first,
            on :func:`kseg.models.backbones.sm_encoder`'s backbones; the decoder
            then has ``len(decoder_filters)`` levels (default 5) and freezing
            leaves the encoder's batch normalisations trainable.
        center: two 3x3 conv-BN-ReLU (512 filters) on the deepest features
            before the decoder; None: only when the encoder ends in a max pooling
            (segmentation_models' rule: VGG).
    """
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
    if encoder_features is not None:
        decoder_filters = tuple(decoder_filters or (256, 128, 64, 32, 16))
        inputs, x, skips, pooled = bb.sm_encoder_skips(backbone, input_shape, encoder_weights, encoder_freeze,
                                                       encoder_features, backbone_kwargs, len(decoder_filters))
        center = pooled if center is None else center
    else:
        inputs, x, skips, levels = bb.encoder_skips(backbone, input_shape, encoder_weights, encoder_freeze,
                                                    backbone_kwargs)
        if decoder_filters is None:
            decoder_filters = (256, 128, 64, 32, 16) if levels == 5 else (512, 256, 128, 64, 32, 16)[-levels:]
        bb.check_levels(decoder_filters, levels, backbone)
    if center:
        x = center_block(x, decoder_batchnorm)
    for i, (f, skip) in enumerate(zip(decoder_filters, skips)):
        x = _decoder_stage(x, skip, f, f"decoder_stage{i}", upsampling, decoder_batchnorm)
    outputs = head(x, num_classes, activation)
    return keras.Model(inputs, outputs, name=name or f"unet_{backbone}")


def center_block(x, decoder_batchnorm: bool):
    """segmentation_models' centre block on the deepest features: two 3x3 conv-BN-ReLU of 512 filters."""
    x = conv_bn_relu(x, 512, use_batchnorm=decoder_batchnorm, name="center_block1")
    return conv_bn_relu(x, 512, use_batchnorm=decoder_batchnorm, name="center_block2")


def _decoder_stage(x, skip, f: int, n: str, upsampling: str, decoder_batchnorm: bool):
    """One decoder level named ``n``: x2 upsampling of ``x``, the ``skip`` (if any) concatenated, conv-BN-ReLU."""
    if upsampling == "transpose":
        x = layers.Conv2DTranspose(f, 4, strides=2, padding="same", use_bias=not decoder_batchnorm,
                                   name=f"{n}_transpose")(x)
        if decoder_batchnorm:
            x = FusedBatchNormalization(name=f"{n}_transpose_bn")(x)
        x = layers.Activation("relu", name=f"{n}_transpose_relu")(x)
    elif upsampling == "bilinear":  # keras's bilinear UpSampling2D fails at a run-time size in a TF graph
        x = BilinearUpSampling2D(2, name=f"{n}_upsampling")(x)
    if upsampling == "nearest":  # upsample + concatenate + 3x3 conv as one layer, at the low resolution
        x = conv_bn_relu([x] if skip is None else [x, skip], f, use_batchnorm=decoder_batchnorm,
                         name=f"{n}a", conv=UpsampleConv2D)
    else:
        if skip is not None:
            x = layers.Concatenate(name=f"{n}_concat")([x, skip])
        x = conv_bn_relu(x, f, use_batchnorm=decoder_batchnorm, name=f"{n}a")
    if upsampling != "transpose":
        x = conv_bn_relu(x, f, use_batchnorm=decoder_batchnorm, name=f"{n}b")
    return x
