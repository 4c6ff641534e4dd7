"""Shared building blocks (keras.layers only, so graphs are backend-neutral)."""

from __future__ import annotations

import keras
from keras import layers


def conv_bn_relu(x, filters: int, kernel_size: int = 3, strides: int = 1, dilation_rate: int = 1,
                 use_batchnorm: bool = True, name: str | None = None,
                 kernel_initializer: str = "he_uniform"):
    """Conv (no bias when followed by BN) -> BN -> ReLU."""
    n = (lambda s: f"{name}_{s}") if name else (lambda s: None)
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", dilation_rate=dilation_rate,
                      use_bias=not use_batchnorm, kernel_initializer=kernel_initializer, name=n("conv"))(x)
    if use_batchnorm:
        x = layers.BatchNormalization(name=n("bn"))(x)
    return layers.Activation("relu", name=n("relu"))(x)


def head(x, num_classes: int, activation: str | None = "softmax", kernel_size: int = 3,
         name: str = "final_conv"):
    """Class scores and the output activation, computed in float32 under mixed precision."""
    x = layers.Conv2D(num_classes, kernel_size, padding="same", use_bias=True,
                      kernel_initializer="glorot_uniform", name=name)(x)
    return layers.Activation(activation or "linear", dtype="float32", name=activation or "logits")(x)


def check_input_shape(input_shape) -> tuple:
    """(H, W, C) with H and W multiples of 32 or None; else a ValueError naming valid sizes."""
    from kseg.data.pipeline import MULTIPLE, SizeError, nearest_multiples

    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise SizeError(f"input_shape must be (height, width, channels), got {input_shape}")
    for v in input_shape[:2]:
        if v is not None and (int(v) <= 0 or int(v) % MULTIPLE):
            raise SizeError(f"input size {v} is not a multiple of {MULTIPLE}: use {nearest_multiples(int(v))}")
    return input_shape


def freeze(model_or_layers, trainable: bool = False) -> None:
    """Set ``trainable`` on a model's layers (BatchNorm runs in inference mode when frozen)."""
    items = model_or_layers.layers if isinstance(model_or_layers, keras.Model) else model_or_layers
    for layer in items:
        layer.trainable = trainable
