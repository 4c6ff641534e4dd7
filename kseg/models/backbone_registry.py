"""The backbone registry: ``features(name, inputs)`` -> ``{stride: tensor}``, and the encoder every
architecture starts with (:func:`encoder`). The backbones themselves register from
:mod:`kseg.models.resnets` and :mod:`kseg.models.applications` (see :mod:`kseg.models.backbones`).
"""

from __future__ import annotations

import os

import keras

from kseg.errors import KsegError

BACKBONES: dict[str, callable] = {}


def register(name):
    def deco(fn):
        BACKBONES[name] = fn
        return fn
    return deco


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


# backbones whose level-s map is the input of a 2x2 max pooling (SegNet needs them; FCN scores their pool outputs)
POOLING_BACKBONES = ("plain", "vgg16")
OUTPUT_STRIDES = (8, 16, 32)


def features(name: str, inputs, weights=None, output_stride: int | None = None, **kwargs) -> dict[int, object]:
    """Feature maps ``{stride: tensor}`` of backbone ``name`` applied to ``inputs``.

    ``output_stride`` (8, 16 or 32) makes the deeper levels atrous; ``None`` is
    the backbone's own layout (32, or 16 for ``plain``, the U-Net paper's).
    Extra keyword arguments go to the backbone (e.g. ``filters`` for ``plain``).
    """
    try:
        fn = BACKBONES[name]
    except KeyError:
        raise KsegError(f"unknown backbone {name!r}: choose one of {', '.join(list_backbones())}") from None
    if output_stride is not None and output_stride not in OUTPUT_STRIDES:
        raise KsegError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    return fn(inputs, weights=weights, **kwargs)


def encoder_layers(inputs, feats: dict) -> list:
    """The layers between ``inputs`` and the feature maps (input layer excluded): what ``encoder_freeze`` freezes."""
    return list(keras.Model(inputs, [feats[k] for k in sorted(feats)]).layers[1:])


def encoder(backbone: str, input_shape, weights=None, freeze_encoder: bool = False, backbone_kwargs=None,
            **feature_kwargs):
    """What every architecture starts with: ``(inputs, {stride: tensor})`` for ``backbone``.

    Checks ``input_shape`` (multiples of 32 or None), makes the ``image`` input, runs
    :func:`features` (``feature_kwargs`` such as ``output_stride`` and ``backbone_kwargs``
    go to it) and, with ``freeze_encoder``, makes the encoder's layers non-trainable.
    """
    from kseg.models.layers import check_input_shape, freeze

    inputs = keras.Input(check_input_shape(input_shape), name="image")
    feats = features(backbone, inputs, weights=weights, **feature_kwargs, **(backbone_kwargs or {}))
    if freeze_encoder:
        freeze(encoder_layers(inputs, feats))
    return inputs, feats


def encoder_skips(backbone: str, input_shape, weights=None, freeze_encoder: bool = False, backbone_kwargs=None):
    """:func:`encoder` for a decoder that upsamples x2 from the deepest level to stride 1 (U-Net, Linknet):
    ``(inputs, deepest features, skips, levels)`` with ``skips`` deepest first, one per level (None where the
    backbone has no map at that stride)."""
    inputs, feats = encoder(backbone, input_shape, weights, freeze_encoder, backbone_kwargs)
    deepest = max(feats)
    levels = deepest.bit_length() - 1  # upsample x2 until stride 1
    return inputs, feats[deepest], [feats.get(deepest >> (i + 1)) for i in range(levels)], levels


def check_levels(decoder_filters, levels: int, backbone: str) -> None:
    """``decoder_filters`` needs one value per decoder level; a ``ValueError`` says how many."""
    if len(decoder_filters) != levels:
        raise ValueError(f"decoder_filters needs {levels} values for backbone {backbone!r}, got {decoder_filters}")


def load_encoder_weights(model: keras.Model, weights, name: str) -> None:
    """Load weights from a file path into an encoder sub-model (by layer order)."""
    if weights is None:
        return
    if weights == "imagenet":
        raise KsegError(f"backbone {name!r} has no ImageNet weights in kseg; pass a weights file path or None")
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise KsegError(f"{path}: encoder weights file not found")
    try:
        model.load_weights(path, skip_mismatch=False)
    except Exception as err:  # keras raises several types for a wrong file
        raise KsegError(f"{path}: cannot load encoder weights for {name} ({err})") from None
