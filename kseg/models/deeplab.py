"""DeepLabV3+ (Chen et al., ECCV 2018): atrous backbone, ASPP and a light decoder.

The backbone runs atrous at output stride 16 (or 8). Atrous spatial pyramid
pooling reads its last feature map with five parallel branches: a 1x1 conv,
three 3x3 atrous *depthwise separable* convolutions at rates 6, 12 and 18 (12,
24, 36 at stride 8) and image pooling (global average, 1x1 conv, upsampled),
each with BN and ReLU, concatenated and projected by a 1x1 conv (256) with
dropout 0.1. The decoder upsamples that x4 (bilinear), concatenates the stride-4
low-level features reduced to 48 channels by a 1x1 conv, refines with two 3x3
depthwise separable convolutions (256) and classifies with a 1x1 conv, whose
scores are upsampled x4 to the input.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models import backbones as bb
from kseg.models.layers import (BilinearUpSampling2D, ResizeLike, conv_bn_relu, head,
                               sep_conv_bn_relu)

RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def deeplabv3plus(num_classes: int, backbone: str = "resnet50", input_shape=(None, None, 3), encoder_weights=None,
                  encoder_freeze: bool = False, activation: str | None = "softmax", output_stride: int = 16,
                  atrous_rates=None, aspp_filters: int = 256, low_level_filters: int = 48,
                  decoder_filters: int = 256, dropout: float = 0.1, backbone_kwargs: dict | None = None,
                  name: str | None = None):
    """Build a DeepLabV3+.

    Args:
        output_stride: 16 (default) or 8.
        atrous_rates: the ASPP rates; default (6, 12, 18) at stride 16, doubled at 8.
        aspp_filters, low_level_filters, decoder_filters: widths (paper: 256, 48, 256).
        dropout: after the ASPP projection.
        backbone_kwargs: extra arguments for the backbone.
        The others as for :func:`kseg.models.unet`.
    """
    if output_stride not in RATES:
        raise KsegError(f"deeplabv3plus output_stride must be 16 or 8, got {output_stride!r}")
    rates = tuple(atrous_rates or RATES[output_stride])
    inputs, feats = bb.encoder(backbone, input_shape, encoder_weights, encoder_freeze, backbone_kwargs,
                               output_stride=output_stride)
    x = feats[32]
    branches = [conv_bn_relu(x, aspp_filters, 1, name="aspp0")]
    for i, rate in enumerate(rates, 1):
        branches.append(sep_conv_bn_relu(x, aspp_filters, 3, dilation_rate=rate, name=f"aspp{i}"))
    pool = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pooling")(x)
    pool = conv_bn_relu(pool, aspp_filters, 1, name="aspp_pool")
    branches.append(ResizeLike(name="aspp_pool_upsampling")([pool, x]))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, aspp_filters, 1, name="aspp_projection")
    x = layers.Dropout(dropout, name="aspp_dropout")(x)
    x = BilinearUpSampling2D(output_stride // 4, name="decoder_upsampling")(x)
    low = conv_bn_relu(feats[4], low_level_filters, 1, name="decoder_low_level")
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = sep_conv_bn_relu(x, decoder_filters, 3, name="decoder_conv0")
    x = sep_conv_bn_relu(x, decoder_filters, 3, name="decoder_conv1")
    outputs = head(x, num_classes, activation, kernel_size=1, upsample=4)
    return keras.Model(inputs, outputs, name=name or f"deeplabv3plus_{backbone}")
