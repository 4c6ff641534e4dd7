"""Layers that resample feature maps (keras.ops only, so graphs are backend-neutral).

Registered under package "kseg", so a ``.keras`` file that uses them loads once
``kseg.models`` is imported; each one works at an unknown (None, None) input size:
SegNet's :class:`MaxUnpooling2D`, PSPNet's :class:`AdaptiveAveragePooling`,
:class:`ResizeLike` (a small grid to another tensor's size), FCN's
:class:`BilinearUpsampling` kernel initialiser and :class:`BilinearUpSampling2D`.
"""

from __future__ import annotations

import keras
from keras import layers, ops



@keras.saving.register_keras_serializable(package="kseg")
class MaxUnpooling2D(layers.Layer):
    """SegNet's unpooling: ``[x, features]`` -> x placed at the 2x2 argmax of ``features``.

    ``features`` is the encoder tensor that a 2x2 / stride-2 max pooling reduced
    (shape (N, 2H, 2W, C)); ``x`` has shape (N, H, W, C). Each value of ``x`` goes
    to the position that held the maximum of its pooling window (the first one
    on ties), the other three positions get zeros: the pooling indices, recomputed
    from the features, with no learned parameters.
    """

    def call(self, inputs):
        x, feats = inputs
        shape = ops.shape(feats)
        n, h2, w2, c = shape[0], shape[1], shape[2], shape[3]
        h, w = h2 // 2, w2 // 2
        f = ops.reshape(feats, (n, h, 2, w, 2, c))
        f = ops.transpose(f, (0, 1, 3, 5, 2, 4))  # N, H, W, C, 2, 2
        f = ops.reshape(f, (n, h, w, c, 4))
        mask = ops.one_hot(ops.argmax(f, axis=-1), 4, dtype=x.dtype)  # N, H, W, C, 4
        y = ops.expand_dims(x, -1) * mask
        y = ops.reshape(y, (n, h, w, c, 2, 2))
        y = ops.transpose(y, (0, 1, 4, 2, 5, 3))  # N, H, 2, W, 2, C
        return ops.reshape(y, (n, h2, w2, c))

    def compute_output_shape(self, input_shapes):
        x_shape, f_shape = input_shapes
        return (x_shape[0], f_shape[1], f_shape[2], x_shape[3])


def _bin_matrix(size, bins: int):
    """(bins, size) averaging matrix of adaptive pooling: bin i covers [floor(i*size/bins), ceil((i+1)*size/bins))."""
    i = ops.arange(bins, dtype="int32")
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    j = ops.arange(size, dtype="int32")
    inside = ops.logical_and(j[None, :] >= start[:, None], j[None, :] < end[:, None])
    inside = ops.cast(inside, "float32")
    return inside / ops.sum(inside, axis=1, keepdims=True)


def _bilinear_matrix(size, src: int):
    """(size, src) matrix of a bilinear resize from ``src`` to ``size`` samples (half-pixel centres)."""
    j = ops.cast(ops.arange(size, dtype="int32"), "float32")
    pos = (j + 0.5) * (src / ops.cast(size, "float32")) - 0.5
    pos = ops.clip(pos, 0.0, float(src - 1))
    lo = ops.floor(pos)
    frac = pos - lo
    lo = ops.cast(lo, "int32")
    hi = ops.minimum(lo + 1, src - 1)
    return (ops.one_hot(lo, src) * (1.0 - frac)[:, None]) + (ops.one_hot(hi, src) * frac[:, None])


@keras.saving.register_keras_serializable(package="kseg")
class AdaptiveAveragePooling(layers.Layer):
    """Average pooling to a ``bins`` x ``bins`` grid at any (also unknown) input size.

    PyTorch's ``AdaptiveAvgPool2d`` rule (bins may overlap when the size is not a
    multiple of ``bins``), written as two small matrix products so it needs no
    static shape. PSPNet's pyramid pooling uses it with bins 1, 2, 3 and 6.
    """

    def __init__(self, bins: int, **kwargs):
        super().__init__(**kwargs)
        self.bins = int(bins)

    def call(self, x):
        shape = ops.shape(x)
        ph = ops.cast(_bin_matrix(shape[1], self.bins), x.dtype)
        pw = ops.cast(_bin_matrix(shape[2], self.bins), x.dtype)
        x = ops.einsum("ih,nhwc->niwc", ph, x)
        return ops.einsum("jw,niwc->nijc", pw, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}


@keras.saving.register_keras_serializable(package="kseg")
class ResizeLike(layers.Layer):
    """Bilinear resize of ``x`` to the height and width of ``reference``: ``ResizeLike()([x, reference])``.

    For small grids (pyramid bins, image pooling) at a size known only at run
    time; ``x``'s spatial size must be static. Half-pixel centres, like
    ``UpSampling2D(interpolation="bilinear")``.
    """

    def call(self, inputs):
        x, ref = inputs
        shape = ops.shape(ref)
        sh, sw = int(x.shape[1]), int(x.shape[2])
        if sh == 1 and sw == 1:
            return ops.broadcast_to(x, (ops.shape(x)[0], shape[1], shape[2], ops.shape(x)[3]))
        uh = ops.cast(_bilinear_matrix(shape[1], sh), x.dtype)
        uw = ops.cast(_bilinear_matrix(shape[2], sw), x.dtype)
        x = ops.einsum("hi,niwc->nhwc", uh, x)
        return ops.einsum("wj,nhjc->nhwc", uw, x)

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="kseg")
class BilinearUpsampling(keras.initializers.Initializer):
    """Kernel of a transposed convolution that upsamples each channel bilinearly (FCN's initialisation).

    For a ``Conv2DTranspose(filters, 2 * factor, strides=factor)`` kernel of shape
    (k, k, out, in): channel i maps to channel i, every other pair gets zeros.
    """

    def __call__(self, shape, dtype=None):
        k, _, out_ch, in_ch = shape
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        r = ops.cast(ops.arange(k), "float32")
        f1 = 1.0 - ops.abs(r - center) / factor
        filt = f1[:, None] * f1[None, :]
        eye = ops.eye(out_ch, in_ch, dtype="float32")
        return ops.cast(filt[:, :, None, None] * eye[None, None], dtype or "float32")

    def get_config(self):
        return {}


def _upsample_axis(x, axis, f):
    prev = ops.concatenate([_slice(x, axis, 0, 1), _slice(x, axis, 0, -1)], axis=axis)
    nxt = ops.concatenate([_slice(x, axis, 1, None), _slice(x, axis, -1, None)], axis=axis)
    parts = []
    for r in range(f):
        d = (r + 0.5) / f - 0.5
        parts.append(x * (1 + d) - prev * d if d < 0 else x * (1 - d) + nxt * d)
    y = ops.stack(parts, axis=axis + 1)
    shape = ops.shape(x)
    new = [shape[i] for i in range(4)]
    new[axis] = shape[axis] * f
    return ops.reshape(y, new)


def bilinear_upsample(x, factor: int):
    """NHWC ``x`` upsampled ``factor`` times, bilinear with half-pixel centres (``tf.image.resize``'s values),
    at sizes known only at run time: each output row blends an input row and its neighbour, edges clamped."""
    factor = int(factor)
    if factor == 1:
        return x
    return _upsample_axis(_upsample_axis(x, 1, factor), 2, factor)


@keras.saving.register_keras_serializable(package="kseg")
class BilinearUpSampling2D(layers.Layer):
    """``UpSampling2D(size, interpolation="bilinear")`` that also runs at an unknown size in a TF graph.

    Keras's bilinear ``UpSampling2D`` calls ``ops.image.resize`` with the new
    size, which fails when the size is only known at run time (a (None, None)
    model in a SavedModel or after a retrace). Here each output row is a blend
    of an input row and its neighbour (half-pixel centres, edges clamped), the
    same values as ``tf.image.resize`` / ``UpSampling2D`` give.
    """

    def __init__(self, size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, x):
        return bilinear_upsample(x, self.size)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.size, None if w is None else w * self.size, c)

    def get_config(self):
        return {**super().get_config(), "size": self.size}



def _slice(x, axis, start, stop):
    index = [slice(None)] * 4
    index[axis] = slice(start, stop)
    return x[tuple(index)]

