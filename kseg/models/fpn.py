"""FPN (Lin et al. 2017; Kirillov et al.'s panoptic FPN head) on any kseg backbone, as segmentation_models' ``FPN``.

A top-down pyramid: the deepest feature map (1x1 conv to ``pyramid_filters``
where its channels differ), upsampled x2 (nearest) and added to the next
shallower feature map's 1x1 convolution, four times (P5..P2). Each P level
gets two 3x3 conv-BN-ReLU (``segmentation_filters``), is upsampled (nearest) to
P2's resolution, and the four are concatenated (or summed); spatial dropout
(optional), a 3x3 conv-BN-ReLU, a bilinear upsampling to the input's size and
a 3x3 classifier follow. With ``encoder_features`` the encoder is
segmentation_models' (``kseg.sm.FPN``), as for :func:`kseg.models.unet`.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models import backbones as bb
from kseg.models.layers import BilinearUpSampling2D, conv_bn_relu, head

AGGREGATIONS = ("concat", "sum")


def fpn(num_classes: int, backbone: str = "resnet34", input_shape=(None, None, 3), encoder_weights=None,
        encoder_freeze: bool = False, pyramid_filters: int = 256, segmentation_filters: int | None = None,
        pyramid_batchnorm: bool = True, aggregation: str = "concat", dropout: float | None = None,
        activation: str | None = "softmax", backbone_kwargs: dict | None = None, name: str | None = None,
        encoder_features=None):
    """Build an FPN.

    Args:
        pyramid_filters: channels of the pyramid (P levels).
        segmentation_filters: channels of each level's segmentation branch and the
            final convolution; default ``pyramid_filters // 2``.
        pyramid_batchnorm: batch normalisation in the segmentation branches.
        aggregation: "concat" (default) or "sum" of the four branches.
        dropout: spatial dropout rate after the aggregation (None: none).
        encoder_features: as for :func:`kseg.models.unet` (four layers).
        The others as for :func:`kseg.models.unet`.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    segmentation_filters = segmentation_filters or pyramid_filters // 2
    if encoder_features is not None:
        from kseg.models.layers import check_input_shape

        if backbone_kwargs:
            raise ValueError("backbone_kwargs cannot be combined with encoder_features")
        if encoder_features == "default":
            encoder_features = bb.SM_FEATURE_LAYERS.get(backbone, ())[:4]
        encoder_features = list(encoder_features)
        if len(encoder_features) < 4:
            raise ValueError(f"FPN needs 4 encoder_features, got {len(encoder_features)}")
        inputs, x, skips, _ = bb.sm_encoder(backbone, check_input_shape(input_shape), encoder_weights,
                                            encoder_freeze, encoder_features[:4])
        final_upsampling = 2
    else:
        inputs, feats = bb.encoder(backbone, input_shape, encoder_weights, encoder_freeze, backbone_kwargs)
        deepest = max(feats)
        strides = [deepest >> k for k in (1, 2, 3, 4)]
        missing = [s for s in strides if s not in feats]
        if missing:
            raise ValueError(f"FPN needs backbone {backbone!r}'s features at strides {strides}; it has "
                             f"{sorted(feats)}")
        x = feats[deepest]
        skips = [feats[s] for s in strides]
        final_upsampling = strides[-1]
    pyramid = _pyramid(x, skips, pyramid_filters)
    branches = _segmentation_branches(pyramid, segmentation_filters, pyramid_batchnorm)
    if aggregation == "sum":
        x = layers.Add(name="aggregation_sum")(branches[::-1])
    else:
        x = layers.Concatenate(name="aggregation_concat")(branches[::-1])
    if dropout:
        x = layers.SpatialDropout2D(dropout, name="pyramid_dropout")(x)
    x = conv_bn_relu(x, segmentation_filters, use_batchnorm=pyramid_batchnorm, name="final_stage")
    if final_upsampling > 1:
        x = BilinearUpSampling2D(final_upsampling, name="final_upsampling")(x)
    outputs = head(x, num_classes, activation, name="head_conv")
    return keras.Model(inputs, outputs, name=name or f"fpn_{backbone}")


def _pyramid(x, skips, pyramid_filters: int) -> list:
    """The top-down pyramid P5..P2: ``x`` upsampled x2 and added to each skip's 1x1 projection in turn."""
    pyramid = []
    for stage, skip in zip((5, 4, 3, 2), skips):
        n = f"fpn_stage_p{stage}"
        if int(x.shape[-1]) != pyramid_filters:
            x = layers.Conv2D(pyramid_filters, 1, kernel_initializer="he_uniform", name=f"{n}_pre_conv")(x)
        skip = layers.Conv2D(pyramid_filters, 1, kernel_initializer="he_uniform", name=f"{n}_conv")(skip)
        x = layers.UpSampling2D(2, name=f"{n}_upsampling")(x)
        x = layers.Add(name=f"{n}_add")([x, skip])
        pyramid.append(x)
    return pyramid


def _segmentation_branches(pyramid, filters: int, batchnorm: bool) -> list:
    """Per pyramid level, two 3x3 conv-BN-ReLU, upsampled to P2's resolution."""
    branches = []
    for stage, p in zip((5, 4, 3, 2), pyramid):
        s = conv_bn_relu(p, filters, use_batchnorm=batchnorm, name=f"segm_stage{stage}a")
        s = conv_bn_relu(s, filters, use_batchnorm=batchnorm, name=f"segm_stage{stage}b")
        if stage > 2:
            s = layers.UpSampling2D(2 ** (stage - 2), name=f"upsampling_stage{stage}")(s)
        branches.append(s)
    return branches
