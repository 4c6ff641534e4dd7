"""Backbones: networks that only extract feature maps, keyed by their stride.

``features(name, inputs, weights=None, output_stride=None)`` runs backbone
``name`` on a Keras tensor of raw RGB in [0, 255] and returns ``{stride: tensor}``;
the backbone's preprocessing is part of the graph. Decoders pick what they need:
U-Net takes every stride, FCN strides 8/16/32, DeepLabV3+ 4 and 32, and so on.

With ``output_stride`` 16 or 8 the backbone is *atrous*: the downsampling past
that stride is removed and the later convolutions are dilated instead (DeepLab),
so the keys name the level (2, 4, 8, 16, 32) and the deeper levels stay at the
output stride's resolution. The weights are the same either way.

- ``plain``: the U-Net paper's encoder, two 3x3 conv-BN-ReLU per level, 64 to
  1024 filters, strides 1 to 16 (4 poolings); given an ``output_stride`` it adds
  a fifth pooling and a level at stride 32 (another 1024 filters);
- ``resnet18`` / ``resnet34``: the ResNet v1 layout of segmentation_models'
  encoders (``bn_data`` input normalisation, pre-activation residual blocks),
  so kseg's U-Net matches ``sm.Unet`` layer for layer; strides 2 to 32;
  ``weights="imagenet"`` loads segmentation_models' ImageNet weights and a path
  a Keras 2 HDF5 file in their layout (:mod:`kseg.models.weights`);
- ``vgg16``, ``resnet50``, ``mobilenetv2``, ``efficientnetb0``: built on
  ``keras.applications`` (a nested sub-model named ``<backbone>_encoder``), so
  ``weights="imagenet"`` loads the official ImageNet weights (Keras downloads
  them once into ``$KERAS_HOME/models``) and a path loads that file. vgg16 also
  gives stride 1. Their preprocessing (``caffe`` mean subtraction and BGR order
  for vgg16/resnet50, [-1, 1] for mobilenetv2, EfficientNet's own
  normalisation) sits in front as Keras layers. Other input channel counts
  work with ``weights=None``.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.layers import (BilinearUpSampling2D, FusedBatchNormalization, MaxUnpooling2D, ResizeLike,
                               ReverseChannels, UpsampleConv2D, set_weights)

BACKBONES: dict[str, callable] = {}


def register(name):
    def deco(fn):
        BACKBONES[name] = fn
        return fn
    return deco


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


# backbones whose level-s map is the input of a 2x2 max pooling (SegNet needs them; FCN scores their pool outputs)
POOLING_BACKBONES = ("plain", "vgg16")
OUTPUT_STRIDES = (8, 16, 32)


def features(name: str, inputs, weights=None, output_stride: int | None = None, **kwargs) -> dict[int, object]:
    """Feature maps ``{stride: tensor}`` of backbone ``name`` applied to ``inputs``.

    ``output_stride`` (8, 16 or 32) makes the deeper levels atrous; ``None`` is
    the backbone's own layout (32, or 16 for ``plain``, the U-Net paper's).
    Extra keyword arguments go to the backbone (e.g. ``filters`` for ``plain``).
    """
    try:
        fn = BACKBONES[name]
    except KeyError:
        raise KsegError(f"unknown backbone {name!r}: choose one of {', '.join(list_backbones())}") from None
    if output_stride is not None and output_stride not in OUTPUT_STRIDES:
        raise KsegError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    return fn(inputs, weights=weights, **kwargs)


def encoder_layers(inputs, feats: dict) -> list:
    """The layers between ``inputs`` and the feature maps (input layer excluded): what ``encoder_freeze`` freezes."""
    return list(keras.Model(inputs, [feats[k] for k in sorted(feats)]).layers[1:])


def encoder(backbone: str, input_shape, weights=None, freeze_encoder: bool = False, backbone_kwargs=None,
            **feature_kwargs):
    """What every architecture starts with: ``(inputs, {stride: tensor})`` for ``backbone``.

    Checks ``input_shape`` (multiples of 32 or None), makes the ``image`` input, runs
    :func:`features` (``feature_kwargs`` such as ``output_stride`` and ``backbone_kwargs``
    go to it) and, with ``freeze_encoder``, makes the encoder's layers non-trainable.
    """
    from kseg.models.layers import check_input_shape, freeze

    inputs = keras.Input(check_input_shape(input_shape), name="image")
    feats = features(backbone, inputs, weights=weights, **feature_kwargs, **(backbone_kwargs or {}))
    if freeze_encoder:
        freeze(encoder_layers(inputs, feats))
    return inputs, feats


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


# --------------------------------------------------------------------------- keras.applications

# name -> (constructor, {stride: layer name}, preprocessing)
_APPLICATIONS = {
    "vgg16": ("VGG16", {1: "block1_conv2", 2: "block2_conv2", 4: "block3_conv3", 8: "block4_conv3",
                        16: "block5_conv3", 32: "block5_pool"}, "caffe"),
    "resnet50": ("ResNet50", {2: "conv1_relu", 4: "conv2_block3_out", 8: "conv3_block4_out",
                              16: "conv4_block6_out", 32: "conv5_block3_out"}, "caffe"),
    "mobilenetv2": ("MobileNetV2", {2: "block_1_expand_relu", 4: "block_3_expand_relu", 8: "block_6_expand_relu",
                                    16: "block_13_expand_relu", 32: "out_relu"}, "tf"),
    "efficientnetb0": ("EfficientNetB0", {2: "block2a_expand_activation", 4: "block3a_expand_activation",
                                          8: "block4a_expand_activation", 16: "block6a_expand_activation",
                                          32: "top_activation"}, "efficientnet"),
}
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def _preprocess(x, name, mode, channels):
    """The network's ImageNet preprocessing as Keras layers (inputs: raw RGB in [0, 255])."""
    if mode == "caffe":  # keras.applications.{vgg16,resnet50}.preprocess_input: RGB->BGR, minus the BGR mean
        mean = list(_CAFFE_MEAN_RGB) if channels == 3 else [sum(_CAFFE_MEAN_RGB) / 3] * channels
        x = layers.Normalization(mean=mean, variance=[1.0] * channels, name=f"{name}_mean")(x)
        if channels == 3:
            x = ReverseChannels(name=f"{name}_bgr")(x)
    elif mode == "tf":  # to [-1, 1]
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{name}_rescale")(x)
    return x  # "efficientnet": the network normalises its input itself


def _load_application(name, channels, weights, constructor=None):
    constructor = constructor or _APPLICATIONS[name][0]
    if weights is not None and weights != "imagenet":
        path = os.fspath(weights)
        if not os.path.exists(path):
            raise KsegError(f"{path}: encoder weights file not found")
        weights = path
    if weights is not None and channels != 3:
        raise KsegError(f"backbone {name!r} with encoder_weights={weights!r} needs 3 input channels, got "
                        f"{channels}: use encoder_weights=None for other channel counts")
    import warnings
    try:
        with warnings.catch_warnings():  # MobileNetV2's "input shape undefined, loading 224 weights"
            warnings.simplefilter("ignore")
            base = getattr(keras.applications, constructor)(include_top=False, weights=weights,
                                                            input_shape=(None, None, channels))
    except KsegError:
        raise
    except Exception as err:  # a wrong file, no network for the download, ...
        raise KsegError(f"cannot load {weights!r} weights for backbone {name!r} ({type(err).__name__}: {err})") \
            from None
    if name == "efficientnetb0" and weights is None and channels == 3:
        # keras.applications leaves the Normalization layer unset without weights: standardise like ImageNet
        norm = next(layer for layer in base.layers if isinstance(layer, layers.Normalization))
        norm.adapt_mean.assign([float(m) for m in _IMAGENET_MEAN_RGB])
        norm.adapt_variance.assign([float(s) ** 2 for s in _IMAGENET_STD_RGB])
        norm.finalize_state()
    return base


_STRIDED = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)
_POOLS = (layers.MaxPooling2D, layers.AveragePooling2D)
_UPSAMPLING = (BilinearUpSampling2D, layers.UpSampling2D)
# layers that upsample by a factor fixed in their weights or inputs: they cannot follow a changed stride
_RESAMPLING = (UpsampleConv2D, MaxUnpooling2D, layers.Conv2DTranspose)


def _key(tensor):
    h = tensor._keras_history
    return h.operation.name, h.tensor_index


def _graph_strides(model, input_strides) -> tuple[dict, dict]:
    """The stride (relative to the image) of every tensor in functional ``model``'s graph.

    Returns ``(layer name -> its inputs' strides, (layer name, output index) -> stride)``;
    ``input_strides`` are those of ``model``'s inputs. A nested functional model is
    followed inside (its outputs can have different strides).
    """
    out = {_key(t): s for t, s in zip(model.inputs, input_strides)}
    names = {layer.name for layer in model.layers}
    in_strides = {}
    for layer in model.layers:  # topological order
        if isinstance(layer, layers.InputLayer):
            continue
        node = next(n for n in layer._inbound_nodes
                    if all(t._keras_history.operation.name in names for t in n.input_tensors))
        strides = in_strides[layer.name] = [out[_key(t)] for t in node.input_tensors]
        s = max(strides)
        if isinstance(layer, keras.Model):
            inner = _graph_strides(layer, strides)[1]
            for i, t in enumerate(layer.outputs):
                out[(layer.name, i)] = inner[_key(t)]
            continue
        if isinstance(layer, ResizeLike):  # [x, reference]: the reference's size
            s = strides[1]
        elif isinstance(layer, (MaxUnpooling2D, UpsampleConv2D)):  # both upsample x2
            s = s / 2
        elif isinstance(layer, layers.Conv2DTranspose):
            s = s / int(layer.strides[0])
        elif isinstance(layer, _STRIDED + _POOLS):
            s *= int(layer.strides[0])
        elif isinstance(layer, _UPSAMPLING):
            size = layer.size if isinstance(layer.size, int) else layer.size[0]
            s = s / int(size)
        out[(layer.name, 0)] = s
    return in_strides, out


def _atrous_copy(model, output_stride: int, input_strides) -> keras.Model:
    in_strides, out_stride = _graph_strides(model, input_strides)

    def new(s):  # a tensor's stride after the conversion
        return min(s, output_stride)

    def clone(layer):
        if isinstance(layer, keras.Model):  # nested (keras.applications encoders): converted inside
            return _atrous_copy(layer, output_stride, in_strides[layer.name])
        cfg = layer.get_config()
        s = max(in_strides[layer.name])
        factor = s / new(s)  # how much finer than before this layer's input now is
        cls = layer.__class__
        if factor > 1 and isinstance(layer, _RESAMPLING):
            raise KsegError(f"cannot change the output stride of {model.name!r}: its layer {layer.name!r} "
                            f"({cls.__name__}) upsamples at stride {s:g}, past {output_stride}")
        if isinstance(layer, _STRIDED):
            k = int(cfg["kernel_size"][0])
            changed = False
            if s * int(cfg["strides"][0]) > output_stride and int(cfg["strides"][0]) > 1:
                cfg["strides"] = (1, 1)
                changed = True
            if k > 1 and factor > 1:
                rate = int(cfg["dilation_rate"][0]) * int(factor)
                cfg["dilation_rate"] = (rate, rate)
                changed = True
            if changed and k > 1:
                cfg["padding"] = "same"
        elif isinstance(layer, _POOLS) and s * int(cfg["strides"][0]) > output_stride:
            cfg.update(strides=(1, 1), padding="same")
        elif isinstance(layer, layers.ZeroPadding2D) and s >= output_stride:
            cfg["padding"] = ((0, 0), (0, 0))
        elif isinstance(layer, _UPSAMPLING) and factor > 1:
            size = int(new(s) / new(out_stride[(layer.name, 0)]))
            cfg["size"] = size if isinstance(layer, BilinearUpSampling2D) else (size, size)
        elif cls is layers.BatchNormalization:
            cls = FusedBatchNormalization
        return cls.from_config(cfg)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.weights and not isinstance(layer, keras.Model):
            set_weights(copy.get_layer(layer.name), layer.get_weights())
    return copy


def atrous(model, output_stride: int = 32):
    """A copy of functional ``model`` (same weights) whose stride stops at ``output_stride``.

    DeepLab's atrous conversion: convolutions and poolings that would go past
    ``output_stride`` get stride 1; every later convolution wider than 1x1 has
    its dilation multiplied by how much finer its input now is than before (so
    an ASPP at rates 6/12/18 on stride 16 gets 12/24/36 at stride 8), and
    upsamplings after it shrink to reach the same resolution as before. Zero
    paddings that fed a strided 'valid' convolution there become empty and the
    convolution 'same'. Nested functional models (keras.applications encoders)
    are converted inside. Works on an encoder (``output_stride`` 8, 16 or 32 of
    a stride-32 network) and on a whole trained model: ``atrous(deeplab, 8)``
    evaluates a DeepLabV3+ trained at output stride 16 at stride 8, as the
    DeepLabV3 paper does. A model whose decoder upsamples with learned layers
    (transposed convolutions, unpooling) past ``output_stride`` raises
    :class:`~kseg.errors.KsegError`. Each Keras ``BatchNormalization`` also
    becomes kseg's :class:`~kseg.models.layers.FusedBatchNormalization` (same
    config and weights, TensorFlow's fused kernel), so keras.applications
    encoders run their batch norms as kseg's own blocks do; ``output_stride=32``
    changes nothing else in a stride-32 model.
    """
    return _atrous_copy(model, output_stride, [1] * len(model.inputs))


def _application(name, inputs, weights=None, output_stride=32):
    channels = int(inputs.shape[-1])
    constructor, names, mode = _APPLICATIONS[name]
    base = _load_application(name, channels, weights)
    levels = sorted(names)
    encoder = keras.Model(base.inputs, [base.get_layer(names[k]).output for k in levels], name=f"{name}_encoder")
    if (output_stride and output_stride < 32) or keras.backend.backend() == "tensorflow":
        encoder = atrous(encoder, output_stride or 32)  # also: TensorFlow's fused batch norm
    x = _preprocess(inputs, name, mode, channels)
    return dict(zip(levels, encoder(x)))


def _register_application(name):
    def fn(inputs, weights=None, output_stride=32):
        return _application(name, inputs, weights, output_stride)
    fn.__name__ = name
    fn.__doc__ = f"keras.applications.{_APPLICATIONS[name][0]} as a kseg backbone."
    register(name)(fn)


for _name in _APPLICATIONS:
    _register_application(_name)


# --------------------------------------------------------------------------- segmentation_models' encoders (kseg.sm)

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
            last = features(backbone, inputs, weights=weights)[32]
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
