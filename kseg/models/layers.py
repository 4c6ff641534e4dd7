"""Shared building blocks (keras.layers only, so graphs are backend-neutral)."""

from __future__ import annotations

import keras
from keras import layers, ops


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
# ``kseg.models`` is imported; each one works at an unknown (None, None) input size.


@keras.saving.register_keras_serializable(package="kseg")
class ReverseChannels(layers.Layer):
    """RGB -> BGR (reverse the last axis): the "caffe" preprocessing of VGG16 and ResNet50."""

    def call(self, x):
        return ops.flip(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


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

    def _axis(self, x, axis):
        f = self.size
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

    def call(self, x):
        if self.size == 1:
            return x
        return self._axis(self._axis(x, 1), 2)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.size, None if w is None else w * self.size, c)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def set_weights(layer, weights) -> None:
    """``layer.set_weights(weights)``, then what a copied layer needs beyond its variables: a
    ``Normalization`` layer's mean and variance tensors are derived from its adapted weights."""
    layer.set_weights(weights)
    if isinstance(layer, layers.Normalization):
        layer.finalize_state()


def _slice(x, axis, start, stop):
    index = [slice(None)] * 4
    index[axis] = slice(start, stop)
    return x[tuple(index)]


_FOLDABLE_CONVS = (layers.Conv2D, layers.DepthwiseConv2D)  # Conv2DTranspose is a Conv2D subclass: excluded below


def _foldable_pairs(model) -> dict:
    """{id(conv): bn} for each BatchNormalization of ``model`` that only ever normalises one Conv2D /
    DepthwiseConv2D's output (linear activation, that output used by nothing else, channels last)."""
    consumers: dict[int, int] = {}
    for t in model.outputs:
        consumers[id(t)] = consumers.get(id(t), 0) + 1
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
            continue
        if bn.axis not in (-1, len(bn.input.shape) - 1):
            continue
        (x,) = bn._inbound_nodes[0].input_tensors
        conv = x._keras_history.operation
        if (isinstance(conv, _FOLDABLE_CONVS) and not isinstance(conv, layers.Conv2DTranspose)
                and len(conv._inbound_nodes) == 1 and consumers.get(id(x)) == 1
                and conv.activation is keras.activations.linear and conv.data_format == "channels_last"):
            pairs[id(conv)] = bn
    return pairs


def _folded_weights(conv, bn) -> list:
    """The kernel and bias of ``conv`` followed by ``bn`` in inference mode, as one convolution."""
    import numpy as np

    var = np.asarray(keras.ops.convert_to_numpy(bn.moving_variance), np.float64)
    mean = np.asarray(keras.ops.convert_to_numpy(bn.moving_mean), np.float64)
    scale = 1.0 / np.sqrt(var + bn.epsilon)
    if bn.scale:
        scale = scale * keras.ops.convert_to_numpy(bn.gamma)
    shift = -mean * scale
    if bn.center:
        shift = shift + keras.ops.convert_to_numpy(bn.beta)
    kernel = np.asarray(keras.ops.convert_to_numpy(conv.kernel), np.float64)
    if isinstance(conv, layers.DepthwiseConv2D):  # (kh, kw, in, multiplier): output channel = in * m + k
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    bias = shift
    if conv.use_bias:
        bias = bias + scale * keras.ops.convert_to_numpy(conv.bias)
    return [kernel.astype(np.float32), bias.astype(np.float32)]


def _rebuild(model, config_of, weights_of, bypass=frozenset()) -> keras.Model:
    """A copy of ``model`` (nested functional models too) whose layers are rebuilt from
    ``config_of(layer)`` and given ``weights_of(layer)``; the layers whose ids are in ``bypass`` are
    left out (their input passes through)."""
    originals: dict[int, object] = {}

    def clone(layer):
        new = layer.__class__.from_config(config_of(layer))
        originals[id(new)] = layer
        return new

    def call(layer, *args, **kwargs):
        original = originals.get(id(layer))
        if original is not None and id(original) in bypass:
            return args[0]
        out = layer(*args, **kwargs)
        if original is not None and original.weights:
            set_weights(layer, weights_of(original))
        return out

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    copy.name = model.name
    return copy


def _computes_in_float32(layer) -> bool:
    return keras.backend.standardize_dtype(layer.dtype_policy.compute_dtype) == "float32"


def _float32_config(layer) -> dict:
    """``layer``'s config, with a float32 dtype policy if it computes in another dtype."""
    config = layer.get_config()
    if "dtype" in config and not _computes_in_float32(layer):
        config["dtype"] = "float32"
    return config


def fold_batch_norm(model: keras.Model, float32: bool = False) -> keras.Model:
    """An inference copy of ``model`` with each batch norm that follows a convolution folded into it.

    Conv -> BatchNormalization (inference mode: ``gamma * (x - mean) / sqrt(var + eps) + beta``) is one
    affine map per channel, so it becomes the convolution's kernel and bias: the copy computes the same
    outputs (to float32 rounding) with fewer ops, and TensorFlow then fuses conv + bias + ReLU into one
    kernel. Batch norms that do not directly follow a convolution (ResNet's pre-activation ones after
    an Add, a normalised input) are kept. Nested functional models (keras.applications encoders) are
    folded too. ``model`` itself is not changed; the copy is for inference and export, not training.
    With ``float32=True`` the copy also computes in float32 where ``model`` computed in another dtype
    (what :func:`float32_copy` does), in the same single copy.
    """
    folds: dict[int, object] = {}  # id(original conv) -> its bn

    def collect(m):
        folds.update(_foldable_pairs(m))
        for layer in m.layers:
            if isinstance(layer, keras.Model) and hasattr(layer, "_inbound_nodes") and layer.layers:
                collect(layer)

    collect(model)

    def config_of(layer):
        config = _float32_config(layer) if float32 else layer.get_config()
        if id(layer) in folds:
            config["use_bias"] = True
        return config

    def weights_of(layer):
        return _folded_weights(layer, folds[id(layer)]) if id(layer) in folds else layer.get_weights()

    return _rebuild(model, config_of, weights_of, bypass={id(bn) for bn in folds.values()})


def float32_copy(model: keras.Model) -> keras.Model:
    """A float32 copy of ``model`` if any of its layers computes in another dtype, else ``model`` itself.

    Under a mixed precision policy (``mixed_bfloat16``: ``kseg.train --precision``) the variables are
    float32 and only the computation is not, so the copy holds the very same weights: layers whose
    config says a mixed policy are rebuilt as float32 ones (nested functional encoders too) and get the
    originals' weights. What kseg evaluates, predicts with and exports is this copy: bfloat16 is emulated,
    and several times slower, on CPUs without bfloat16 instructions, and the TFLite converter rejects it.
    """

    def mixed(m) -> bool:
        return any(not _computes_in_float32(la) or (isinstance(la, keras.Model) and mixed(la)) for la in m.layers)

    if not mixed(model):
        return model
    return _rebuild(model, _float32_config, lambda layer: layer.get_weights())


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
                and "_moments" not in self.__dict__  # kseg.distribute's synchronised moments
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
