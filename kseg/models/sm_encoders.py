"""segmentation_models' encoders for kseg.sm's models (:func:`sm_encoder`, :func:`sm_encoder_skips`).

segmentation_models 1.0.1's backbones and default feature layers: kseg's resnet18/34,
classification_models' bottleneck ResNets (50/101/152, built here) and
``keras.applications`` networks. See :mod:`kseg.models.backbones`.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.applications import _load_application, _preprocess
from kseg.models.backbone_registry import load_encoder_weights
from kseg.models.fused import FusedBatchNormalization
from kseg.models.rebuild import atrous, set_weights
from kseg.models.resnets import _BN, _CONV, _conv3x3

class SmOptionError(KsegError, ValueError):
    """A segmentation_models option or backbone that kseg.sm cannot honour."""


# segmentation_models 1.0.1's default feature layers per backbone, deepest first (strides 16, 8, 4, 2[, 1])
_RESNET_FEATURES = ("stage4_unit1_relu1", "stage3_unit1_relu1", "stage2_unit1_relu1", "relu0")
SM_FEATURE_LAYERS = {
    "vgg16": ("block5_conv3", "block4_conv3", "block3_conv3", "block2_conv2", "block1_conv2"),
    "vgg19": ("block5_conv4", "block4_conv4", "block3_conv4", "block2_conv2", "block1_conv2"),
    **{f"resnet{n}": _RESNET_FEATURES for n in (18, 34, 50, 101, 152)},
    "mobilenet": ("conv_pw_11_relu", "conv_pw_5_relu", "conv_pw_3_relu", "conv_pw_1_relu"),
    "mobilenetv2": ("block_13_expand_relu", "block_6_expand_relu", "block_3_expand_relu", "block_1_expand_relu"),
    "efficientnetb0": ("block6a_expand_activation", "block4a_expand_activation", "block3a_expand_activation",
                       "block2a_expand_activation"),
}
# keras.applications networks: constructor, preprocessing
_SM_APPLICATIONS = {"vgg16": ("VGG16", "caffe"), "vgg19": ("VGG19", "caffe"), "mobilenet": ("MobileNet", "tf"),
                    "mobilenetv2": ("MobileNetV2", "tf"), "efficientnetb0": ("EfficientNetB0", "efficientnet")}
# classification_models' ResNets: repetitions, bottleneck blocks
_SM_RESNETS = {"resnet18": ((2, 2, 2, 2), False), "resnet34": ((3, 4, 6, 3), False),
               "resnet50": ((3, 4, 6, 3), True), "resnet101": ((3, 4, 23, 3), True),
               "resnet152": ((3, 8, 36, 3), True)}
# backbones whose layer list is segmentation_models' (so encoder_features may be indexes), and the shift of a
# non-negative index: keras_applications' MobileNets have a padding layer at index 1 that keras.applications' lack
_SM_INDEX_SHIFT = {"vgg16": 0, "vgg19": 0, "mobilenet": -1, "mobilenetv2": -1}


def sm_backbones() -> list[str]:
    """The segmentation_models backbone names kseg.sm builds."""
    return sorted(SM_FEATURE_LAYERS)


def _bottleneck_block(x, filters, stage, block, strides, cut):
    """classification_models' bottleneck block (ResNet-50/101/152): BN-ReLU first, 1x1-3x3-1x1, x4 channels."""
    name = f"stage{stage + 1}_unit{block + 1}_"
    y = FusedBatchNormalization(name=name + "bn1", **_BN)(x)
    y = layers.Activation("relu", name=name + "relu1")(y)
    shortcut = x if cut == "pre" else layers.Conv2D(4 * filters, 1, strides=strides, name=name + "sc", **_CONV)(y)
    y = layers.Conv2D(filters, 1, name=name + "conv1", **_CONV)(y)
    y = FusedBatchNormalization(name=name + "bn2", **_BN)(y)
    y = layers.Activation("relu", name=name + "relu2")(y)
    y = _conv3x3(y, filters, strides, 1, name + "pad2", name + "conv2")
    y = FusedBatchNormalization(name=name + "bn3", **_BN)(y)
    y = layers.Activation("relu", name=name + "relu3")(y)
    y = layers.Conv2D(4 * filters, 1, name=name + "conv3", **_CONV)(y)
    return layers.Add(name=name + "add")([y, shortcut])


def _bottleneck_resnet(inputs, repetitions, weights, name):
    """classification_models' ResNet-50/101/152 (segmentation_models' layout, not keras.applications'): the
    last tensor (``relu1``, stride 32). No ImageNet weights in kseg: a weights file path or None."""
    if weights == "imagenet":
        raise SmOptionError(f"kseg.sm has no ImageNet weights for {name!r} in segmentation_models' layout: "
                            f"use encoder_weights=None or a weights file path")
    x = FusedBatchNormalization(name="bn_data", scale=False, **_BN)(inputs)
    x = layers.ZeroPadding2D(3, name="pad0")(x)
    x = layers.Conv2D(64, 7, strides=2, name="conv0", **_CONV)(x)
    x = FusedBatchNormalization(name="bn0", **_BN)(x)
    x = layers.Activation("relu", name="relu0")(x)
    x = layers.ZeroPadding2D(1, name="pool0_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pooling0")(x)
    for stage, reps in enumerate(repetitions):
        for block in range(reps):
            strides = 2 if block == 0 and stage > 0 else 1
            x = _bottleneck_block(x, 64 * 2 ** stage, stage, block, strides, "post" if block == 0 else "pre")
    x = FusedBatchNormalization(name="bn1", **_BN)(x)
    x = layers.Activation("relu", name="relu1")(x)
    if weights is not None:
        load_encoder_weights(keras.Model(inputs, x), weights, name)
    return x


def _sm_layer(net, ref, backbone):
    """Layer ``ref`` of ``net``: a name, or segmentation_models' index where kseg knows its layer order."""
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        raise SmOptionError(f"encoder_features must hold layer names or indexes, got {ref!r}")
    if isinstance(ref, int):
        if backbone not in _SM_INDEX_SHIFT:
            raise SmOptionError(f"encoder_features by index is not supported for backbone {backbone!r} (kseg's "
                                f"layer order differs from segmentation_models'): use layer names such as "
                                f"{SM_FEATURE_LAYERS[backbone][1]!r}")
        shift = _SM_INDEX_SHIFT[backbone]
        n = len(net.layers) - shift  # segmentation_models' layer count
        index = ref + n if ref < 0 else ref
        if not 0 <= index < n or (shift and index == 1):
            raise SmOptionError(f"backbone {backbone!r} has no layer index {ref} in kseg (encoder_features)")
        return net.layers[index + shift if index > 0 else 0]
    try:
        return net.get_layer(ref)
    except ValueError:
        raise SmOptionError(f"backbone {backbone!r} has no layer {ref!r} (encoder_features)") from None


def _constant_normalization(model):
    """A copy of ``model`` whose ``Normalization`` layers hold their mean and variance as constants, not weights
    (segmentation_models' EfficientNet normalises outside the network: no such weights in its parameter count)."""
    import numpy as np

    def clone(layer):
        if isinstance(layer, layers.Normalization):
            return layers.Normalization(axis=layer.axis, mean=np.asarray(layer.adapt_mean),
                                        variance=np.asarray(layer.adapt_variance), name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.weights and not isinstance(layer, layers.Normalization):
            set_weights(copy.get_layer(layer.name), layer.get_weights())
    return copy


def sm_encoder_skips(backbone, input_shape, encoder_weights, encoder_freeze, encoder_features, backbone_kwargs,
                     levels: int):
    """segmentation_models' encoder for a decoder of ``levels`` levels (U-Net, Linknet):
    ``(inputs, deepest, skips, pooled)`` with ``skips`` deepest first, None past the encoder's features.
    ``encoder_features`` is "default" (the backbone's four) or layer names / indexes (:func:`sm_encoder`)."""
    from kseg.models.layers import check_input_shape

    if backbone_kwargs:
        raise ValueError("backbone_kwargs cannot be combined with encoder_features")
    if encoder_features == "default":
        encoder_features = SM_FEATURE_LAYERS.get(backbone, ())[:4]
    inputs, x, feats, pooled = sm_encoder(backbone, check_input_shape(input_shape), encoder_weights,
                                          encoder_freeze, list(encoder_features))
    skips = list(feats[:levels]) + [None] * max(0, levels - len(feats))
    return inputs, x, skips, pooled


def sm_encoder(backbone: str, input_shape, weights=None, freeze: bool = False, feature_layers=(), top: bool = True):
    """segmentation_models' encoder ``backbone`` for kseg.sm's models.

    Returns ``(inputs, last, feats, ends_in_pooling)``: the ``image`` input, the
    backbone's last tensor (``None`` with ``top=False``: the model then holds the
    encoder only up to ``feature_layers``, as segmentation_models' PSPNet does), the
    tensors of ``feature_layers`` (names, or indexes where the layer order is
    segmentation_models'), and whether the last layer is a max pooling (VGG: the
    U-Net and Linknet then add a centre block). ``freeze`` makes the encoder's
    layers non-trainable except its batch normalisations, as segmentation_models'
    ``freeze_model`` does. resnet18/34 are kseg's backbones (the same layout);
    resnet50/101/152 are classification_models' layout, built here; the others
    come from keras.applications.
    """
    if backbone not in SM_FEATURE_LAYERS:
        raise SmOptionError(f"kseg.sm does not provide backbone {backbone!r}: choose one of "
                            f"{', '.join(sm_backbones())}")
    inputs = keras.Input(tuple(input_shape), name="image")
    channels = int(input_shape[-1])
    if backbone in _SM_RESNETS:
        repetitions, bottleneck = _SM_RESNETS[backbone]
        if bottleneck:
            last = _bottleneck_resnet(inputs, repetitions, weights, backbone)
        else:
            from kseg.models import backbones  # looked up there: the public entry point, replaceable

            last = backbones.features(backbone, inputs, weights=weights)[32]
        net = keras.Model(inputs, last)
        feats = [_sm_layer(net, ref, backbone).output for ref in feature_layers]
        ends_in_pooling = isinstance(net.layers[-1], layers.MaxPooling2D)
        encoder_part = keras.Model(inputs, ([last] if top else []) + feats).layers[1:]
    else:
        constructor, mode = _SM_APPLICATIONS[backbone]
        base = _load_application(backbone, channels, weights, constructor)
        outs = [_sm_layer(base, ref, backbone).output for ref in feature_layers]
        ends_in_pooling = isinstance(base.layers[-1], layers.MaxPooling2D)
        encoder = keras.Model(base.inputs, ([base.output] if top else []) + outs, name=f"{backbone}_encoder")
        if keras.backend.backend() == "tensorflow":
            encoder = atrous(encoder, 32)  # the same network, with TensorFlow's fused batch norm
        if any(isinstance(layer, layers.Normalization) for layer in encoder.layers):
            encoder = _constant_normalization(encoder)
        result = encoder(_preprocess(inputs, backbone, mode, channels))
        result = list(result) if isinstance(result, (list, tuple)) else [result]
        last, feats = (result[0], result[1:]) if top else (None, result)
        encoder_part = encoder.layers[1:]
    if freeze:
        for layer in encoder_part:
            if not isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    return inputs, last, feats, ends_in_pooling
