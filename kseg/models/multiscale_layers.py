"""The layers of a multi-scale model (:mod:`kseg.models.multiscale`), in keras.ops only.

- :class:`ScaleResize`: an image batch resized (bilinear) to ``scale`` times its size, each side rounded to
  the nearest multiple of 32 (:mod:`kseg.shapes`);
- :class:`ResizeTo`: ``[x, reference]`` -> ``x`` resized (bilinear) to the reference's height and width, at
  any (also unknown) size of both;
- :class:`MultiScaleMerge`: per-scale class logits and attention -> the merged logits, or the per-scale
  weights (:func:`scale_weights`).

Registered under package "kseg", so a ``.keras`` file that uses them loads once ``kseg.models`` is imported.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.shapes import MULTIPLE

MODES = ("hierarchical", "attention")


def _nearest_multiple(v, scale: float):
    """``scale * v`` rounded to the nearest multiple of 32 (at least 32); ``v`` an int or a scalar tensor."""
    if isinstance(v, int):
        return max(MULTIPLE, int(round(v * scale / MULTIPLE)) * MULTIPLE)
    n = ops.cast(ops.round(ops.cast(v, "float32") * (scale / MULTIPLE)), "int32")
    return ops.maximum(n, 1) * MULTIPLE


def _resize_matrix(size, src, dtype):
    """(size, src) matrix of a bilinear resize from ``src`` to ``size`` samples (half-pixel centres, edges
    clamped: ``tf.image.resize``'s values); both may be tensors. The identity when ``size == src``."""
    j = ops.cast(ops.arange(size), "float32")
    src_f = ops.cast(src, "float32")
    pos = ops.clip((j + 0.5) * (src_f / ops.cast(size, "float32")) - 0.5, 0.0, src_f - 1.0)
    lo = ops.floor(pos)
    frac = (pos - lo)[:, None]
    lo = ops.cast(lo, "int32")[:, None]
    hi = ops.minimum(lo + 1, ops.cast(src, "int32") - 1)
    i = ops.arange(src, dtype="int32")[None, :]
    m = ops.cast(i == lo, "float32") * (1.0 - frac) + ops.cast(i == hi, "float32") * frac
    return ops.cast(m, dtype)


def resize(x, height, width):
    """``x`` (N, H, W, C) resized bilinearly to (height, width); sizes may be tensors. TensorFlow's own resize
    under the TensorFlow backend (one op, which TFLite converts), two matrix products under the others."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        size = tf.stack([tf.cast(height, tf.int32), tf.cast(width, tf.int32)])
        return tf.cast(tf.image.resize(x, size, method="bilinear", antialias=False), x.dtype)
    shape = ops.shape(x)
    x = ops.einsum("hi,niwc->nhwc", _resize_matrix(height, shape[1], x.dtype), x)
    return ops.einsum("wj,nhjc->nhwc", _resize_matrix(width, shape[2], x.dtype), x)


@keras.saving.register_keras_serializable(package="kseg")
class ScaleResize(layers.Layer):
    """An image batch at ``scale`` times its size (each side rounded to the nearest multiple of 32, at least
    32), resized bilinearly; scale 1 passes the batch through unchanged."""

    def __init__(self, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        if self.scale == 1.0:
            return x
        shape = ops.shape(x)
        h = _nearest_multiple(x.shape[1] if x.shape[1] is not None else shape[1], self.scale)
        w = _nearest_multiple(x.shape[2] if x.shape[2] is not None else shape[2], self.scale)
        return resize(x, h, w)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        if self.scale == 1.0:
            return tuple(input_shape)
        return (n, None if h is None else _nearest_multiple(h, self.scale),
                None if w is None else _nearest_multiple(w, self.scale), c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="kseg")
class ResizeTo(layers.Layer):
    """``[x, reference]`` -> ``x`` resized bilinearly to the reference's height and width (any sizes)."""

    def call(self, inputs):
        x, ref = inputs
        shape = ops.shape(ref)
        return resize(x, shape[1], shape[2])

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def scale_weights(attention, mode: str):
    """Per-scale weights (N, H, W, S), summing to 1 at each pixel, from attention logits; scales ascending.

    ``mode="attention"`` (Chen et al. 2016): ``attention`` is one tensor (N, H, W, S) of scores, one per
    scale, and the weights are its softmax over scales. ``mode="hierarchical"`` (Tao et al. 2020):
    ``attention`` is a list of S - 1 tensors (N, H, W, 1), one per scale from the smallest to the second
    largest. Each scale's sigmoid ``a`` weighs that scale's prediction against the merge of all larger
    scales, ``merged = a * L_small + (1 - a) * merged_larger``, starting from the largest scale: the
    smallest scale gets ``a_1``, the next ``(1 - a_1) * a_2``, ..., the largest ``prod (1 - a_k)``.
    """
    if mode == "attention":
        return ops.softmax(attention, axis=-1)
    weights, rest = [], None  # rest: the weight left for the larger scales
    for logit in attention:
        a = ops.sigmoid(logit)
        weights.append(a if rest is None else rest * a)
        rest = (1.0 - a) if rest is None else rest * (1.0 - a)
    weights.append(rest)
    return ops.concatenate(weights, axis=-1)


@keras.saving.register_keras_serializable(package="kseg")
class MultiScaleMerge(layers.Layer):
    """``[logits_1..S, attention...]`` at one size -> the merged logits ``sum_s w_s * logits_s`` (or, with
    ``output="weights"``, the weights (N, H, W, S)), ``w`` from :func:`scale_weights`.

    ``scales`` are ascending, in the order of the logits; the attention is S - 1 inputs (N, H, W, 1) for
    ``mode="hierarchical"``, one input (N, H, W, S) for ``mode="attention"``. ``aux_weight`` is kept for the
    model (:class:`kseg.models.multiscale.MultiScaleModel`): each scale's auxiliary loss weight in training."""

    def __init__(self, mode: str, scales, output: str = "logits", aux_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown multiscale mode {mode!r}: choose one of {', '.join(MODES)}")
        self.mode = mode
        self.scales = tuple(float(s) for s in scales)
        self.returns = output
        self.aux_weight = float(aux_weight)

    def call(self, inputs):
        s = len(self.scales)
        logits, attention = list(inputs[:s]), list(inputs[s:])
        w = scale_weights(attention if self.mode == "hierarchical" else attention[0], self.mode)
        w = ops.cast(w, logits[0].dtype)
        if self.returns == "weights":
            return w
        merged = logits[0] * w[..., 0:1]
        for i in range(1, s):
            merged = merged + logits[i] * w[..., i:i + 1]
        return merged

    def compute_output_shape(self, input_shapes):
        first = input_shapes[0]
        return (*first[:3], len(self.scales)) if self.returns == "weights" else tuple(first)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "scales": list(self.scales), "output": self.returns,
                "aux_weight": self.aux_weight}
