"""Shared building blocks (keras.layers only, so graphs are backend-neutral).

The blocks every architecture uses (:func:`conv_bn_relu`, :func:`head`, ...), and
every kseg layer and model copy under one import path; they live in:

- :mod:`kseg.models.fused`       FusedBatchNormalization, UpsampleConv2D;
- :mod:`kseg.models.resampling`  MaxUnpooling2D, AdaptiveAveragePooling, ResizeLike,
  BilinearUpsampling, BilinearUpSampling2D;
- :mod:`kseg.models.rebuild`     fold_batch_norm, float32_copy, set_weights.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.models.fused import FusedBatchNormalization, UpsampleConv2D, _phase_kernels  # noqa: F401
from kseg.models.rebuild import (_FOLDABLE_CONVS, _computes_in_float32, _float32_config,  # noqa: F401
                                 _foldable_pairs, _folded_weights, _rebuild, float32_copy, fold_batch_norm,
                                 set_weights)
from kseg.models.resampling import (AdaptiveAveragePooling, BilinearUpSampling2D, BilinearUpsampling,  # noqa: F401
                                    MaxUnpooling2D, ResizeLike, _bilinear_matrix, _bin_matrix, _slice)


def conv_bn_relu(x, filters: int, kernel_size: int = 3, strides: int = 1, dilation_rate: int = 1,
                 use_batchnorm: bool = True, name: str | None = None,
                 kernel_initializer: str = "he_uniform", conv=layers.Conv2D):
    """Conv (no bias when followed by BN) -> BN -> ReLU. ``conv`` is the convolution's class (``Conv2D``, or
    :class:`UpsampleConv2D` with ``x`` as ``[low_res, skip]``)."""
    n = (lambda s: f"{name}_{s}") if name else (lambda s: None)
    x = conv(filters, kernel_size, strides=strides, padding="same", dilation_rate=dilation_rate,
             use_bias=not use_batchnorm, kernel_initializer=kernel_initializer, name=n("conv"))(x)
    if use_batchnorm:
        x = FusedBatchNormalization(name=n("bn"))(x)
    return layers.Activation("relu", name=n("relu"))(x)


def head(x, num_classes: int, activation: str | None = "softmax", kernel_size: int | None = 3,
         name: str = "final_conv", upsample: int = 1, output_name: str | None = None):
    """Class scores and the output activation, computed in float32 under mixed precision.

    ``kernel_size=None`` adds no convolution (``x`` already holds the class scores,
    as in FCN); ``upsample`` > 1 resizes the scores bilinearly before the activation
    (DeepLabV3+, PSPNet). ``output_name`` names the activation layer (default: the
    activation's name), which is the model output's name.
    """
    if kernel_size:
        x = layers.Conv2D(num_classes, kernel_size, padding="same", use_bias=True,
                          kernel_initializer="glorot_uniform", name=name)(x)
    if upsample > 1:
        x = BilinearUpSampling2D(upsample, name=f"{name}_upsampling")(x)
    return layers.Activation(activation or "linear", dtype="float32", name=output_name or activation or "logits")(x)


def sep_conv_bn_relu(x, filters: int, kernel_size: int = 3, dilation_rate: int = 1, name: str = "sepconv"):
    """Depthwise separable convolution as DeepLabV3+ uses it: depthwise (atrous) -> BN -> ReLU -> 1x1 -> BN -> ReLU."""
    x = layers.DepthwiseConv2D(kernel_size, padding="same", dilation_rate=dilation_rate, use_bias=False,
                               name=f"{name}_depthwise")(x)
    x = FusedBatchNormalization(epsilon=1e-5, name=f"{name}_depthwise_bn")(x)
    x = layers.Activation("relu", name=f"{name}_depthwise_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer="he_uniform",
                      name=f"{name}_pointwise")(x)
    x = FusedBatchNormalization(epsilon=1e-5, name=f"{name}_pointwise_bn")(x)
    return layers.Activation("relu", name=f"{name}_pointwise_relu")(x)


def check_input_shape(input_shape) -> tuple:
    """(H, W, C) with H and W multiples of 32 or None; else a ValueError naming valid sizes."""
    from kseg.shapes import SizeError, check_multiple

    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise SizeError(f"input_shape must be (height, width, channels), got {input_shape}")
    for v in input_shape[:2]:
        if v is not None:
            check_multiple(v, "input size")
    return input_shape


def freeze(model_or_layers, trainable: bool = False) -> None:
    """Set ``trainable`` on a model's layers (BatchNorm runs in inference mode when frozen)."""
    items = model_or_layers.layers if isinstance(model_or_layers, keras.Model) else model_or_layers
    for layer in items:
        layer.trainable = trainable


def batch_norm_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, nested sub-models' included, each once."""
    found, seen = [], set()

    def walk(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
        for child in getattr(layer, "layers", None) or []:
            walk(child)

    walk(model)
    return found

# --------------------------------------------------------------------------- custom layers (keras.ops only)
# Registered under package "kseg", so a ``.keras`` file that uses them loads once
# ``kseg.models`` is imported; the others are in the modules named above.


@keras.saving.register_keras_serializable(package="kseg")
class ReverseChannels(layers.Layer):
    """RGB -> BGR (reverse the last axis): the "caffe" preprocessing of VGG16 and ResNet50."""

    def call(self, x):
        return ops.flip(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape
