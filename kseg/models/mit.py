"""Mix Transformer (MiT): SegFormer's hierarchical encoder (Xie et al., NeurIPS 2021), B0 to B5.

``mit(inputs, "mit_b0")`` runs the encoder on a Keras tensor of raw RGB in [0, 255]
and returns ``{4: c1, 8: c2, 16: c3, 32: c4}``; ImageNet normalisation
(mean 0.485/0.456/0.406, std 0.229/0.224/0.225, on [0, 1]) is its first layer.

Four stages. Stage i starts with an *overlapping patch embedding*: a convolution
(7x7 stride 4 in stage 1, 3x3 stride 2 after) with symmetric zero padding of
kernel // 2 (PyTorch's ``padding=k // 2``, not Keras's "same", which pads the
bottom/right more), then LayerNorm. Then ``depths[i]`` transformer blocks, all at
that resolution, and a LayerNorm:

- ``x + drop_path(attn(norm1(x)))``: *efficient self-attention*: queries from
  every position, keys and values from the map reduced by a ``sr x sr`` stride
  ``sr`` convolution and LayerNorm (sequence reduction ratios 8, 4, 2, 1), multi-head
  scaled dot-product attention (heads 1, 2, 5, 8), an output projection;
- ``x + drop_path(mlp(norm2(x)))``: *Mix-FFN*: linear to 4x the width, 3x3
  depthwise convolution, GELU, linear back;
- stochastic depth (``drop_path``) per sample, its rate rising linearly from 0
  over all blocks to ``drop_path_rate`` (0.1).

Tensors stay (N, H, W, C) throughout (the tokens of the paper laid out as the
image), so every layer works at an input size known only at run time and every
weight lives in a plain Keras layer (``Conv2D``, ``Dense``, ``DepthwiseConv2D``,
``LayerNormalization``); the attention itself (:class:`EfficientAttention`) and
:class:`StochasticDepth` have no weights. LayerNorm epsilons follow the official
code: 1e-6 in the blocks and after each stage, 1e-5 in the patch embeddings and
the sequence reduction.

Layer names, and the checkpoints' names they correspond to (stage ``i`` = 1..4,
block ``j`` = 0..; NVlabs/mmseg ``mix_transformer.py`` / Hugging Face
``SegformerModel`` under ``segformer.encoder.``)::

    patch_embed{i}_proj          patch_embed{i}.proj      patch_embeddings.{i-1}.proj
    patch_embed{i}_norm          patch_embed{i}.norm      patch_embeddings.{i-1}.layer_norm
    block{i}_{j}_norm1           block{i}.{j}.norm1       block.{i-1}.{j}.layer_norm_1
    block{i}_{j}_attn_q          ...attn.q                ...attention.self.query
    block{i}_{j}_attn_k          ...attn.kv (rows :C)     ...attention.self.key
    block{i}_{j}_attn_v          ...attn.kv (rows C:)     ...attention.self.value
    block{i}_{j}_attn_sr         ...attn.sr               ...attention.self.sr
    block{i}_{j}_attn_sr_norm    ...attn.norm             ...attention.self.layer_norm
    block{i}_{j}_attn_proj       ...attn.proj             ...attention.output.dense
    block{i}_{j}_norm2           ...norm2                 ...layer_norm_2
    block{i}_{j}_mlp_fc1         ...mlp.fc1               ...mlp.dense1
    block{i}_{j}_mlp_dwconv      ...mlp.dwconv.dwconv     ...mlp.dwconv.dwconv
    block{i}_{j}_mlp_fc2         ...mlp.fc2               ...mlp.dense2
    norm{i}                      norm{i}                  layer_norm.{i-1}

keras-hub's ``MiTBackbone`` holds the same weights under
``patch_and_embed_{i-1}`` (``proj``, ``norm``), ``hierarchical_encoder_{i-1}_{j}``
(``norm1``, ``attn.{q,k,v,sr,norm,proj}``, ``norm2``, ``mlp.{fc1,dwconv,fc2}``) and
the stage LayerNorms in order. Converting a PyTorch tensor: a ``Linear`` weight
(out, in) is the ``Dense`` kernel transposed; a ``Conv2d`` weight (out, in, kh, kw)
becomes (kh, kw, in, out); the depthwise (C, 1, 3, 3) becomes (3, 3, C, 1); a
LayerNorm's weight and bias are ``gamma`` and ``beta``; the official ``kv`` weight
(2C, C) splits into key (first C rows) and value (last C rows).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from kseg.errors import KsegError
from kseg.models.parts import declare_encoder_ends

declare_encoder_ends(r"norm[1-4]")  # each stage's closing LayerNorm: the four feature maps SegFormer decodes


# name -> (embed dims, depths); heads (1, 2, 5, 8), sequence reduction (8, 4, 2, 1) and MLP ratio 4 for all
VARIANTS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
MLP_RATIO = 4
PATCH = ((7, 4), (3, 2), (3, 2), (3, 2))  # (kernel, stride) of each stage's patch embedding
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def list_variants() -> list[str]:
    return list(VARIANTS)


@keras.saving.register_keras_serializable(package="kseg")
class EfficientAttention(layers.Layer):
    """Multi-head scaled dot-product attention of ``[q, k, v]``, each (N, H, W, C) channels-last maps.

    ``q`` gives the output's positions; ``k`` and ``v`` (one map, possibly smaller:
    the sequence-reduced one) give every position attended to. Each of the
    ``num_heads`` heads uses C / num_heads channels and scale
    ``(C / num_heads) ** -0.5``; the output has ``q``'s shape. No weights.
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)

    def call(self, inputs):
        q, k, v = inputs
        channels = q.shape[-1]
        d = channels // self.num_heads
        shape = ops.shape(q)
        n, h, w = shape[0], shape[1], shape[2]

        def tokens(t):
            return ops.reshape(t, (n, -1, self.num_heads, d))

        out = ops.dot_product_attention(tokens(q), tokens(k), tokens(v), scale=d ** -0.5)
        return ops.reshape(out, (n, h, w, channels))

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package="kseg")
class StochasticDepth(layers.Layer):
    """Drop path: in training, zero a residual branch for a random ``rate`` of the samples, scale the rest by
    ``1 / (1 - rate)``; identity at inference. Applied to the branch before the residual addition."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x * ops.cast(mask / keep, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def _normalize(x, channels: int):
    """ImageNet mean/std normalisation of raw [0, 255] input (the channel-mean values for other channel counts)."""
    mean = [255.0 * m for m in _IMAGENET_MEAN]
    var = [(255.0 * s) ** 2 for s in _IMAGENET_STD]
    if channels != 3:
        mean, var = [float(np.mean(mean))] * channels, [float(np.mean(var))] * channels
    return layers.Normalization(mean=mean, variance=var, name="mit_normalize")(x)


def _block(x, dim: int, heads: int, sr: int, drop: float, name: str):
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    q = layers.Dense(dim, name=f"{name}_attn_q")(y)
    if sr > 1:
        y = layers.Conv2D(dim, sr, strides=sr, padding="valid", name=f"{name}_attn_sr")(y)
        y = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_attn_sr_norm")(y)
    k = layers.Dense(dim, name=f"{name}_attn_k")(y)
    v = layers.Dense(dim, name=f"{name}_attn_v")(y)
    y = EfficientAttention(heads, name=f"{name}_attn")([q, k, v])
    y = layers.Dense(dim, name=f"{name}_attn_proj")(y)
    x = layers.Add(name=f"{name}_attn_add")([x, StochasticDepth(drop, name=f"{name}_attn_drop_path")(y)])

    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)
    y = layers.Dense(dim * MLP_RATIO, name=f"{name}_mlp_fc1")(y)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=True, name=f"{name}_mlp_dwconv")(y)
    y = layers.Activation("gelu", name=f"{name}_mlp_gelu")(y)
    y = layers.Dense(dim, name=f"{name}_mlp_fc2")(y)
    return layers.Add(name=f"{name}_mlp_add")([x, StochasticDepth(drop, name=f"{name}_mlp_drop_path")(y)])


def mit(inputs, variant: str = "mit_b0", drop_path_rate: float = 0.1) -> dict[int, object]:
    """MiT encoder ``variant`` on ``inputs`` (raw RGB in [0, 255]): ``{4: c1, 8: c2, 16: c3, 32: c4}``."""
    try:
        dims, depths = VARIANTS[variant]
    except KeyError:
        raise KsegError(f"unknown MiT encoder {variant!r}: choose one of {', '.join(VARIANTS)}") from None
    rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()
    x = _normalize(inputs, int(inputs.shape[-1]))
    feats, stride, n = {}, 1, 0
    for i, (dim, depth, heads, sr, (kernel, step)) in enumerate(zip(dims, depths, HEADS, SR_RATIOS, PATCH), 1):
        x = layers.ZeroPadding2D(kernel // 2, name=f"patch_embed{i}_pad")(x)
        x = layers.Conv2D(dim, kernel, strides=step, padding="valid", name=f"patch_embed{i}_proj")(x)
        x = layers.LayerNormalization(epsilon=1e-5, name=f"patch_embed{i}_norm")(x)
        for j in range(depth):
            x = _block(x, dim, heads, sr, rates[n], name=f"block{i}_{j}")
            n += 1
        x = layers.LayerNormalization(epsilon=1e-6, name=f"norm{i}")(x)
        stride *= step
        feats[stride] = x
    return feats
