"""SegFormer (Xie et al., NeurIPS 2021): a Mix Transformer encoder and an all-MLP decoder.

The encoder (:mod:`kseg.models.mit`, ``mit_b0`` to ``mit_b5``) gives four maps at
strides 4, 8, 16 and 32. The decoder takes each to ``decoder_dim`` channels with
a linear layer (256 for B0/B1, 768 for B2 and larger, as in the paper),
upsamples them bilinearly to stride 4, concatenates them (deepest first, as the
official code does), fuses them with a linear layer (1x1 convolution without
bias), BatchNorm and ReLU, applies dropout (0.1; per channel, PyTorch's
``Dropout2d`` that the authors' code uses), classifies with a 1x1 convolution
and upsamples the scores bilinearly x4 to the input size.

The decoder's layers and the official (mmseg ``SegFormerHead``) / Hugging Face
(``decode_head.``) names: ``decode_linear_c{i}`` = ``linear_c{i}.proj`` /
``linear_c.{i-1}.proj``; ``decode_linear_fuse`` = ``linear_fuse.conv`` /
``linear_fuse``; ``decode_linear_fuse_bn`` = ``linear_fuse.bn`` / ``batch_norm``
(``running_mean``/``running_var`` are ``moving_mean``/``moving_variance``);
``final_conv`` = ``linear_pred`` / ``classifier``.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models.layers import BilinearUpSampling2D, FusedBatchNormalization, check_input_shape, freeze, head
from kseg.models.mit import mit

BACKBONES = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")
DEFAULT_BACKBONE = "mit_b0"


def decoder_dim_for(backbone: str) -> int:
    """The paper's decoder width: 256 for B0 and B1, 768 for larger encoders."""
    return 256 if backbone in ("mit_b0", "mit_b1") else 768


def segformer(num_classes: int, backbone: str = DEFAULT_BACKBONE, input_shape=(None, None, 3),
              encoder_weights=None, encoder_freeze: bool = False, activation: str | None = "softmax",
              decoder_dim: int | None = None, dropout: float = 0.1, drop_path_rate: float = 0.1,
              name: str | None = None):
    """Build a SegFormer.

    Args:
        backbone: ``mit_b0`` (default) to ``mit_b5``.
        encoder_weights: ``None`` (random initialisation), ``"imagenet"`` (NVIDIA's ImageNet MiT,
            downloaded once: :mod:`kseg.models.hub_files`), a SegFormer preset's name (its ADE20K or
            Cityscapes encoder, e.g. ``"segformer-b0-ade20k"``: :mod:`kseg.models.presets`), the path of a Hugging Face MiT or SegFormer
            checkpoint (``.safetensors`` or ``.bin``: its encoder is used, :mod:`kseg.models.hf_segformer`),
            or of a Keras ``.weights.h5`` file of the encoder (what ``keras.Model(inputs,
            list(feats.values())).save_weights`` writes for :func:`kseg.models.mit.mit`).
        decoder_dim: the decoder's width; default 256 for B0/B1, 768 otherwise.
        dropout: before the classifier (paper: 0.1).
        drop_path_rate: the encoder's stochastic depth rate at its last block (paper: 0.1).
        The others as for :func:`kseg.models.unet`.
    """
    if backbone not in BACKBONES:
        raise KsegError(f"segformer needs a MiT backbone, got {backbone!r}: choose one of {', '.join(BACKBONES)}")
    inputs = keras.Input(check_input_shape(input_shape), name="image")
    feats = mit(inputs, backbone, drop_path_rate=drop_path_rate)
    encoder = keras.Model(inputs, [feats[s] for s in sorted(feats)], name=f"{backbone}_encoder")
    if encoder_weights is not None:
        _load(encoder, encoder_weights, backbone)
    if encoder_freeze:
        freeze(encoder.layers[1:])

    dim = decoder_dim or decoder_dim_for(backbone)
    projected = []
    for i, stride in enumerate(sorted(feats), 1):
        y = layers.Dense(dim, name=f"decode_linear_c{i}")(feats[stride])
        if stride > 4:
            y = BilinearUpSampling2D(stride // 4, name=f"decode_upsample_c{i}")(y)
        projected.append(y)
    x = layers.Concatenate(name="decode_concat")(projected[::-1])
    x = layers.Conv2D(dim, 1, use_bias=False, name="decode_linear_fuse")(x)
    x = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name="decode_linear_fuse_bn")(x)
    x = layers.Activation("relu", name="decode_linear_fuse_relu")(x)
    x = layers.SpatialDropout2D(dropout, name="decode_dropout")(x)
    outputs = head(x, num_classes, activation, kernel_size=1, upsample=4)
    return keras.Model(inputs, outputs, name=name or f"segformer_{backbone}")


def _load(encoder: keras.Model, weights, backbone: str) -> None:
    from kseg.models.hf_segformer import load_hf_segformer

    if weights == "imagenet":
        from kseg.models.hub_files import imagenet_path

        weights = imagenet_path(backbone)
    elif isinstance(weights, str) and weights.startswith("segformer-") and not os.path.exists(weights):
        from kseg.models.presets import segformer_weights

        weights = segformer_weights(weights, backbone)
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise KsegError(f"{path}: encoder weights file not found")
    if path.lower().endswith((".safetensors", ".bin", ".pth")):  # a Hugging Face MiT / SegFormer checkpoint
        load_hf_segformer([layer for layer in encoder.layers if layer.weights], path, encoder_only=True)
        return
    try:
        encoder.load_weights(path)
    except Exception as err:  # keras raises several types for a wrong file
        raise KsegError(f"{path}: cannot load encoder weights for {backbone} ({type(err).__name__}: {err})") from None
