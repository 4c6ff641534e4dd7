"""kseg's own backbones, built layer by layer: the U-Net paper's ``plain`` encoder and ``resnet18`` /
``resnet34`` in segmentation_models' (classification_models') layout. See :mod:`kseg.models.backbones`.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models.backbone_registry import load_encoder_weights, register
from kseg.models.fused import FusedBatchNormalization
from kseg.models.parts import declare_encoder_ends

# the layers whose outputs these backbones return (kseg.models.encoder_layers finds the encoder from them)
declare_encoder_ends(r"plain_block\d+_relu2", r"relu0", r"relu1", r"stage\d+_unit1_relu1")

# --------------------------------------------------------------------------- plain U-Net encoder

@register("plain")
def plain(inputs, weights=None, filters=(64, 128, 256, 512, 1024), output_stride=None):
    """The U-Net paper's encoder: strides 1..16; with ``output_stride`` one more level (stride 32)."""
    filters = tuple(filters)
    if output_stride is not None:
        filters = filters + filters[-1:]
    x = layers.Rescaling(1.0 / 255.0, name="plain_rescale")(inputs)
    feats = {}
    for level, f in enumerate(filters):
        stride = 2 ** level
        rate = 1
        if output_stride is not None and stride > output_stride:
            rate = stride // output_stride  # atrous: the pooling keeps the resolution, convolutions dilate
            x = layers.MaxPooling2D(2, strides=1, padding="same", name=f"plain_pool{level}")(x)
        elif level:
            x = layers.MaxPooling2D(2, name=f"plain_pool{level}")(x)
        for k in (1, 2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                              dilation_rate=rate, name=f"plain_block{level}_conv{k}")(x)
            x = FusedBatchNormalization(name=f"plain_block{level}_bn{k}")(x)
            x = layers.Activation("relu", name=f"plain_block{level}_relu{k}")(x)
        feats[stride] = x
    if weights is not None:
        load_encoder_weights(keras.Model(inputs, x), weights, "plain")
    return feats


# --------------------------------------------------------------------------- ResNet 18 / 34

_BN = dict(momentum=0.99, epsilon=2e-5)
_CONV = dict(kernel_initializer="he_uniform", use_bias=False, padding="valid")


def _residual_block(x, filters, stage, block, strides, cut, rate=1, first_rate=None):
    """segmentation_models' (classification_models') basic block: BN-ReLU before each conv.

    Returns the block output and its first activation ``stage{S}_unit{B}_relu1``,
    which segmentation_models' U-Net takes as the skip at the block's input stride.
    ``rate`` > 1 dilates the 3x3 convolutions (atrous backbone); the first one of a
    stage that lost its stride keeps the previous rate (``first_rate``), as in DeepLab.
    """
    name = f"stage{stage + 1}_unit{block + 1}_"
    y = FusedBatchNormalization(name=name + "bn1", **_BN)(x)
    act = layers.Activation("relu", name=name + "relu1")(y)
    shortcut = x if cut == "pre" else layers.Conv2D(filters, 1, strides=strides, name=name + "sc", **_CONV)(act)
    r1 = rate if first_rate is None else first_rate
    y = _conv3x3(act, filters, strides, r1, name + "pad1", name + "conv1")
    y = FusedBatchNormalization(name=name + "bn2", **_BN)(y)
    y = layers.Activation("relu", name=name + "relu2")(y)
    y = _conv3x3(y, filters, 1, rate, name + "pad2", name + "conv2")
    return layers.Add(name=name + "add")([y, shortcut]), act


def _conv3x3(x, filters, strides, rate, pad_name, name):
    """classification_models' ``ZeroPadding2D(rate)`` + 'valid' 3x3 convolution. At stride 1 that is a 'same'
    convolution, which kseg builds instead: the same function and weights, without a pad op per layer and the
    slice its gradient costs (an explicit pad stays at stride 2, where 'same' would pad 0 / 1 instead of 1 / 1)."""
    if strides == 1:
        return layers.Conv2D(filters, 3, dilation_rate=rate, name=name, **dict(_CONV, padding="same"))(x)
    x = layers.ZeroPadding2D(rate, name=pad_name)(x)
    return layers.Conv2D(filters, 3, strides=strides, dilation_rate=rate, name=name, **_CONV)(x)


def _resnet(inputs, repetitions, weights, name, output_stride=32):
    x = FusedBatchNormalization(name="bn_data", scale=False, **_BN)(inputs)  # the preprocessing
    x = layers.ZeroPadding2D(3, name="pad0")(x)
    x = layers.Conv2D(64, 7, strides=2, name="conv0", **_CONV)(x)
    x = FusedBatchNormalization(name="bn0", **_BN)(x)
    x = layers.Activation("relu", name="relu0")(x)
    feats = {2: x}
    x = layers.ZeroPadding2D(1, name="pool0_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pooling0")(x)
    for stage, reps in enumerate(repetitions):
        level = 2 ** (stage + 2)  # 4, 8, 16, 32: the stride this stage has in the plain network
        rate = max(1, level // output_stride)
        for block in range(reps):
            if block == 0:
                strides, cut = (1 if stage == 0 or level > output_stride else 2), "post"
            else:
                strides, cut = 1, "pre"
            first_rate = max(1, rate // 2) if block == 0 else rate
            x, act = _residual_block(x, 64 * 2 ** stage, stage, block, strides, cut, rate, first_rate)
            if block == 0 and stage > 0:
                feats[level // 2] = act  # stride 4, 8, 16
    x = FusedBatchNormalization(name="bn1", **_BN)(x)
    x = layers.Activation("relu", name="relu1")(x)
    feats[32] = x
    if weights is not None:  # "imagenet": classification_models' files, as segmentation_models loads them
        from kseg.models import weights as pretrained

        pretrained.load(keras.Model(inputs, x), weights, name)
    return feats


@register("resnet18")
def resnet18(inputs, weights=None, output_stride=32):
    return _resnet(inputs, (2, 2, 2, 2), weights, "resnet18", output_stride)


@register("resnet34")
def resnet34(inputs, weights=None, output_stride=32):
    return _resnet(inputs, (3, 4, 6, 3), weights, "resnet34", output_stride)
