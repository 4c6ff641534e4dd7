"""Layers that compute what Keras's do in fewer, fused TensorFlow kernels.

:class:`FusedBatchNormalization` (Keras's batch norm through ``FusedBatchNormV3``)
and :class:`UpsampleConv2D` (a 3x3 convolution of a nearest x2 upsampled tensor,
without the upsampling). Registered under package "kseg"; their weights and
configs are interchangeable with the Keras layers they replace.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.models import surgery


@keras.saving.register_keras_serializable(package="kseg")
class FusedBatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that runs TensorFlow's fused kernel where it can.

    Keras 3 normalises with separate moment, subtract, multiply and add ops and,
    under ``mixed_bfloat16``, casts every activation to float32 and back around
    them; TensorFlow's ``FusedBatchNormV3`` (what tf-keras used) does the same
    arithmetic in one kernel per direction, reading bfloat16 and accumulating in
    float32. This layer takes that path on the TensorFlow backend for 4-D
    channels-last inputs without a mask, renorm or synchronised statistics, in
    training and in inference; anywhere else it is Keras's layer unchanged. The
    weights, the config and the moving-statistics update (with the biased batch
    variance, as Keras does) are Keras's, so a model saved with it loads with
    the same numbers in either class. Setting the environment variable
    ``KSEG_FUSED_BN=0`` (read when a model is traced) makes it Keras's layer
    everywhere, for comparisons.
    """

    def _fusable(self, inputs, mask) -> bool:
        import os

        return (os.environ.get("KSEG_FUSED_BN", "1") != "0"
                and keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and self.axis in (3, -1)
                and not surgery.moments_replaced(self)  # kseg.distribute's synchronised moments
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16", "float16"))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = ops.cast(self.gamma, "float32") if self.scale else tf.ones([channels], "float32")
        offset = ops.cast(self.beta, "float32") if self.center else tf.zeros([channels], "float32")
        if training and self.trainable:
            empty = tf.zeros([0], "float32")
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=self.epsilon,
                exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            # the kernel returns the unbiased (n - 1) variance; Keras's moving update uses the biased one
            n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + tf.stop_gradient(mean) * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + tf.stop_gradient(variance) * (1.0 - m))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset, mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return ops.cast(y, self.compute_dtype)


def _phase_kernels(kernel):
    """The four 2x2 kernels that a 3x3 ``kernel`` (3, 3, cin, cout) applies to a nearest x2 upsampled image, per output
    phase, as (4, 2, 2, cin, cout) in the order (0, 0), (0, 1), (1, 0), (1, 1). Along each axis phase 0 reads source
    pixels (i - 1, i, i), so its taps are (k0, k1 + k2); phase 1 reads (i, i, i + 1): (k0 + k1, k2)."""
    import numpy as np

    taps = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], "float32")  # (phase, 2, 3)
    mix = np.einsum("par,qbc->pqabrc", taps, taps).reshape(16, 9)  # (phase, a, b) <- (r, c)
    shape = ops.shape(kernel)
    flat = ops.reshape(kernel, (9, -1))
    return ops.reshape(ops.matmul(ops.cast(mix, kernel.dtype), flat), (4, 2, 2, shape[2], shape[3]))


@keras.saving.register_keras_serializable(package="kseg")
class UpsampleConv2D(layers.Conv2D):
    """``Conv2D(filters, 3, padding="same")`` of ``concat(nearest_upsample_x2(x), skip)``, without the upsampling.

    U-Net's decoder (segmentation_models' too) upsamples ``x`` by repeating each
    pixel 2x2, concatenates the encoder's ``skip`` and runs a 3x3 convolution at
    the high resolution. Every 3x3 window of a repeated image sees only 2x2
    distinct source pixels, so the ``x`` part of that convolution is four 2x2
    convolutions at the low resolution (one per output phase, with the 3x3
    kernel's taps summed), interleaved by ``depth_to_space``: the same function
    and the same gradients in 16/36 of the ``x`` part's multiply-adds, and the
    upsampled and concatenated tensors are never stored. ``skip`` goes through
    an ordinary 3x3 convolution with its slice of the kernel, added.

    Call it on ``x`` or on ``[x, skip]``. The kernel is the one ``Conv2D`` would
    have on the concatenation, ``(3, 3, channels(x) + channels(skip), filters)``,
    so weights and configs are interchangeable with the explicit
    UpSampling2D -> Concatenate -> Conv2D graph. Only ``kernel_size=3``,
    ``strides=1``, ``dilation_rate=1``, ``padding="same"`` and channels-last are
    supported. Setting the environment variable ``KSEG_FUSED_UPSAMPLE=0`` (read
    when the layer is traced) computes the explicit graph instead, for comparisons.
    """

    def __init__(self, filters, kernel_size=3, **kwargs):
        kwargs.setdefault("padding", "same")
        super().__init__(filters, kernel_size, **kwargs)
        if (self.kernel_size != (3, 3) or self.strides != (1, 1) or self.dilation_rate != (1, 1)
                or self.padding != "same" or self.data_format != "channels_last" or self.groups != 1):
            raise ValueError("UpsampleConv2D supports only a 3x3, stride-1, undilated, 'same', channels-last "
                             "convolution")
        self.input_spec = None

    @staticmethod
    def _split(inputs):
        """``(x, skip or None)`` from ``x``, ``[x]`` or ``[x, skip]`` (tensors or shapes)."""
        if isinstance(inputs, (list, tuple)) and inputs and not isinstance(inputs[0], (int, type(None))):
            return inputs[0], (inputs[1] if len(inputs) > 1 else None)
        return inputs, None

    def build(self, input_shape):
        x_shape, skip_shape = self._split(input_shape)
        channels = x_shape[-1] + (skip_shape[-1] if skip_shape is not None else 0)
        super().build(tuple(x_shape[:-1]) + (channels,))
        self.input_spec = None

    def compute_output_shape(self, input_shape):
        x_shape, _ = self._split(input_shape)
        up = lambda v: None if v is None else 2 * v  # noqa: E731
        return (x_shape[0], up(x_shape[1]), up(x_shape[2]), self.filters)

    def call(self, inputs):
        import os

        x, skip = self._split(inputs)
        if os.environ.get("KSEG_FUSED_UPSAMPLE", "1") == "0":
            up = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
            y = self.convolution_op(up if skip is None else ops.concatenate([up, skip], axis=-1), self.kernel)
        else:
            if skip is None:
                y = self._phases(x, self.kernel)
            else:
                kx, ks = ops.split(self.kernel, [x.shape[-1]], axis=2)
                y = self._phases(x, kx) + self.convolution_op(skip, ks)
        if self.use_bias:
            y = ops.add(y, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        return self.activation(y) if self.activation is not None else y

    def _phases(self, x, kernel):
        # output pixel (2i + p, 2j + q) reads source rows (i - 1, i) when p = 0, (i, i + 1) when p = 1 (columns
        # likewise): a valid 2x2 convolution of x padded by one pixel on the side that phase reaches past
        # unstacked, not indexed: the gradient is one stack, not four zero-filled StridedSliceGrads of the kernel
        # (30 ms a step at decoder stage 0). Padding inside tf.nn.conv2d (explicit paddings) measured slower
        # than these pad ops with oneDNN, so they stay.
        kernels = ops.unstack(_phase_kernels(kernel), 4, axis=0)
        phases = []
        for p in (0, 1):
            for q in (0, 1):
                xp = ops.pad(x, ((0, 0), (1 - p, p), (1 - q, q), (0, 0)))
                phases.append(ops.conv(xp, kernels[2 * p + q], strides=1, padding="valid"))
        z = ops.concatenate(phases, axis=-1)  # channel block 2p + q holds phase (p, q)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.nn.depth_to_space(z, 2)
        shape = ops.shape(x)
        n, h, w, f = shape[0], shape[1], shape[2], self.filters
        z = ops.reshape(z, (n, h, w, 2, 2, f))
        z = ops.transpose(z, (0, 1, 3, 2, 4, 5))
        return ops.reshape(z, (n, 2 * h, 2 * w, f))
