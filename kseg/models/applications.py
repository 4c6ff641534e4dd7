"""``keras.applications`` networks as kseg backbones: vgg16, resnet50, mobilenetv2, efficientnetb0.

Each is a nested sub-model named ``<backbone>_encoder`` (made atrous, and with
TensorFlow's fused batch norm, by :func:`kseg.models.rebuild.atrous`), its
ImageNet preprocessing in front as Keras layers. See :mod:`kseg.models.backbones`.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.backbone_registry import register
from kseg.models.layers import ReverseChannels
from kseg.models.parts import declare_encoder_ends
from kseg.models.rebuild import atrous

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
# each network is one nested sub-model, named "<backbone>_encoder" (kseg.models.encoder_layers finds it by that name)
declare_encoder_ends(r"[a-z0-9]+_encoder")
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
