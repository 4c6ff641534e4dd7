"""Copies of a functional model with some layers rebuilt: inference copies for evaluation and export.

- :func:`fold_batch_norm`: each batch norm that follows a convolution folded into it;
- :func:`float32_copy`: a mixed-precision model computing in float32, with the same weights;
- :func:`atrous`: the same network with its stride stopped at 8 or 16 (DeepLab's atrous conversion);
- :func:`set_weights`: a copied layer's weights, and what its state derives from them.

The graph itself is read through :mod:`kseg.models.surgery` (Keras has no public
API for a layer's calls).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models import surgery
from kseg.models.fused import FusedBatchNormalization, UpsampleConv2D
from kseg.models.resampling import BilinearUpSampling2D, MaxUnpooling2D, ResizeLike


def set_weights(layer, weights) -> None:
    """``layer.set_weights(weights)``, then what a copied layer needs beyond its variables: a
    ``Normalization`` layer's mean and variance tensors are derived from its adapted weights."""
    layer.set_weights(weights)
    if isinstance(layer, layers.Normalization):
        layer.finalize_state()


_FOLDABLE_CONVS = (layers.Conv2D, layers.DepthwiseConv2D)  # Conv2DTranspose is a Conv2D subclass: excluded below


def _foldable_pairs(model) -> dict:
    """{id(conv): bn} for each BatchNormalization of ``model`` that only ever normalises one Conv2D /
    DepthwiseConv2D's output (linear activation, that output used by nothing else, channels last)."""
    consumers: dict[int, int] = {}
    for t in model.outputs:
        consumers[id(t)] = consumers.get(id(t), 0) + 1
    for layer in model.layers:
        for node in surgery.inbound_nodes(layer):
            for t in node.input_tensors:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, layers.BatchNormalization) or len(surgery.inbound_nodes(bn)) != 1:
            continue
        if bn.axis not in (-1, len(bn.input.shape) - 1):
            continue
        (x,) = surgery.inbound_nodes(bn)[0].input_tensors
        conv = surgery.keras_history(x)[0]
        if (isinstance(conv, _FOLDABLE_CONVS) and not isinstance(conv, layers.Conv2DTranspose)
                and len(surgery.inbound_nodes(conv)) == 1 and consumers.get(id(x)) == 1
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
        if _bilinear_upsampling(layer):  # Keras's cannot trace at a run-time size; kseg's computes the same
            new = BilinearUpSampling2D(int(layer.size[0]), name=layer.name)
        else:
            new = layer.__class__.from_config(config_of(layer))
        originals[id(new)] = layer
        return new

    def call(layer, *args, **kwargs):
        original = originals.get(id(layer))
        if original is not None and id(original) in bypass:
            return args[0]
        out = layer(*args, **kwargs)
        if original is not None and getattr(original, "weights", None):
            set_weights(layer, weights_of(original))
        return out

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)
    copy.name = model.name
    return copy


def _bilinear_upsampling(layer) -> bool:
    """A Keras bilinear ``UpSampling2D`` (square factor, channels last) at a size known only at run time, which
    kseg's layer replaces (at a fixed size, as in PSPNet, Keras's traces and is kept)."""
    if not (isinstance(layer, layers.UpSampling2D) and layer.interpolation == "bilinear"
            and layer.size[0] == layer.size[1] and layer.data_format == "channels_last"):
        return False
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):  # called more than once: replace it to be safe
        return True
    return shape[1] is None or shape[2] is None


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
            if isinstance(layer, keras.Model) and layer.layers:
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
    Keras's bilinear ``UpSampling2D`` (in keras-hub's networks) becomes kseg's equal
    :class:`~kseg.models.resampling.BilinearUpSampling2D` in the copy, which also traces at a size known only
    at run time.
    """

    def needs_copy(m) -> bool:
        return any(not _computes_in_float32(la) or _bilinear_upsampling(la)
                   or (isinstance(la, keras.Model) and needs_copy(la)) for la in m.layers)

    if not needs_copy(model):
        return model
    return _rebuild(model, _float32_config, lambda layer: layer.get_weights())


# --------------------------------------------------------------------------- atrous conversion

_STRIDED = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)
_POOLS = (layers.MaxPooling2D, layers.AveragePooling2D)
_UPSAMPLING = (BilinearUpSampling2D, layers.UpSampling2D)
# layers that upsample by a factor fixed in their weights or inputs: they cannot follow a changed stride
_RESAMPLING = (UpsampleConv2D, MaxUnpooling2D, layers.Conv2DTranspose)


def _key(tensor):
    operation, _, index = surgery.keras_history(tensor)
    return operation.name, index


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
        node = next(n for n in surgery.inbound_nodes(layer)
                    if all(surgery.keras_history(t)[0].name in names for t in n.input_tensors))
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
