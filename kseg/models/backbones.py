"""Backbones: networks that only extract feature maps, keyed by their stride.

``features(name, inputs, weights=None)`` runs backbone ``name`` on a Keras tensor
of raw RGB in [0, 255] (any channel count for kseg's own backbones) and returns
``{stride: tensor}``; the backbone's preprocessing is part of the graph. Decoders
pick what they need: U-Net takes every stride, FCN strides 8/16/32, and so on.

- ``plain``: the U-Net paper's encoder, two 3x3 conv-BN-ReLU per level, 64 to
  1024 filters, strides 1 to 16;
- ``resnet18`` / ``resnet34``: the ResNet v1 layout of segmentation_models'
  encoders (``bn_data`` input normalisation, pre-activation residual blocks),
  so kseg's U-Net matches ``sm.Unet`` layer for layer; strides 2 to 32.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kseg.errors import KsegError

BACKBONES: dict[str, callable] = {}


def register(name):
    def deco(fn):
        BACKBONES[name] = fn
        return fn
    return deco


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def features(name: str, inputs, weights=None) -> dict[int, object]:
    """Feature maps ``{stride: tensor}`` of backbone ``name`` applied to ``inputs``."""
    try:
        fn = BACKBONES[name]
    except KeyError:
        raise KsegError(f"unknown backbone {name!r}: choose one of {', '.join(list_backbones())}") from None
    return fn(inputs, weights=weights)


def load_encoder_weights(model: keras.Model, weights, name: str) -> None:
    """Load weights from a file path into an encoder sub-model (by layer order)."""
    if weights is None:
        return
    if weights == "imagenet":
        raise KsegError(f"backbone {name!r} has no ImageNet weights in kseg; pass a weights file path or None")
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise KsegError(f"{path}: encoder weights file not found")
    try:
        model.load_weights(path, skip_mismatch=False)
    except Exception as err:  # keras raises several types for a wrong file
        raise KsegError(f"{path}: cannot load encoder weights for {name} ({err})") from None


# --------------------------------------------------------------------------- plain U-Net encoder

@register("plain")
def plain(inputs, weights=None, filters=(64, 128, 256, 512, 1024)):
    x = layers.Rescaling(1.0 / 255.0, name="plain_rescale")(inputs)
    feats = {}
    for level, f in enumerate(filters):
        if level:
            x = layers.MaxPooling2D(2, name=f"plain_pool{level}")(x)
        for k in (1, 2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                              name=f"plain_block{level}_conv{k}")(x)
            x = layers.BatchNormalization(name=f"plain_block{level}_bn{k}")(x)
            x = layers.Activation("relu", name=f"plain_block{level}_relu{k}")(x)
        feats[2 ** level] = x
    if weights is not None:
        load_encoder_weights(keras.Model(inputs, x), weights, "plain")
    return feats


# --------------------------------------------------------------------------- ResNet 18 / 34

_BN = dict(momentum=0.99, epsilon=2e-5)
_CONV = dict(kernel_initializer="he_uniform", use_bias=False, padding="valid")


def _residual_block(x, filters, stage, block, strides, cut):
    """segmentation_models' (classification_models') basic block: BN-ReLU before each conv.

    Returns the block output and its first activation ``stage{S}_unit{B}_relu1``,
    which segmentation_models' U-Net takes as the skip at the block's input stride.
    """
    name = f"stage{stage + 1}_unit{block + 1}_"
    y = layers.BatchNormalization(name=name + "bn1", **_BN)(x)
    act = layers.Activation("relu", name=name + "relu1")(y)
    shortcut = x if cut == "pre" else layers.Conv2D(filters, 1, strides=strides, name=name + "sc", **_CONV)(act)
    y = layers.ZeroPadding2D(1, name=name + "pad1")(act)
    y = layers.Conv2D(filters, 3, strides=strides, name=name + "conv1", **_CONV)(y)
    y = layers.BatchNormalization(name=name + "bn2", **_BN)(y)
    y = layers.Activation("relu", name=name + "relu2")(y)
    y = layers.ZeroPadding2D(1, name=name + "pad2")(y)
    y = layers.Conv2D(filters, 3, name=name + "conv2", **_CONV)(y)
    return layers.Add(name=name + "add")([y, shortcut]), act


def _resnet(inputs, repetitions, weights, name):
    x = layers.BatchNormalization(name="bn_data", scale=False, **_BN)(inputs)  # the preprocessing
    x = layers.ZeroPadding2D(3, name="pad0")(x)
    x = layers.Conv2D(64, 7, strides=2, name="conv0", **_CONV)(x)
    x = layers.BatchNormalization(name="bn0", **_BN)(x)
    x = layers.Activation("relu", name="relu0")(x)
    feats = {2: x}
    x = layers.ZeroPadding2D(1, name="pool0_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pooling0")(x)
    for stage, reps in enumerate(repetitions):
        for block in range(reps):
            if block == 0:
                strides, cut = (1 if stage == 0 else 2), "post"
            else:
                strides, cut = 1, "pre"
            x, act = _residual_block(x, 64 * 2 ** stage, stage, block, strides, cut)
            if block == 0 and stage > 0:
                feats[2 ** (stage + 1)] = act  # stride 4, 8, 16
    x = layers.BatchNormalization(name="bn1", **_BN)(x)
    x = layers.Activation("relu", name="relu1")(x)
    feats[32] = x
    if weights is not None:
        load_encoder_weights(keras.Model(inputs, x), weights, name)
    return feats


@register("resnet18")
def resnet18(inputs, weights=None):
    return _resnet(inputs, (2, 2, 2, 2), weights, "resnet18")


@register("resnet34")
def resnet34(inputs, weights=None):
    return _resnet(inputs, (3, 4, 6, 3), weights, "resnet34")
