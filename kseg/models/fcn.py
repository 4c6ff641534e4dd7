"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, CVPR 2015).

The classification network made fully convolutional: on VGG16, the classifier's
fc6 (a 7x7 convolution with 4096 filters) and fc7 (1x1, 4096) with dropout 0.5,
then a 1x1 ``score_fr`` layer. FCN-32s upsamples those scores x32 with a learned
transposed convolution; FCN-16s first upsamples them x2 and adds the scores of
``pool4`` (stride 16), FCN-8s also adds those of ``pool3`` (stride 8), fusing by
sum. Every upsampling is a transposed convolution (kernel 2f, stride f, no bias)
initialised to bilinear interpolation and learned; the new score layers start
at zero, as in the paper. Convolutions use 'same' padding, so the output has the
input's size without the paper's 100-pixel padding and crop.

With ImageNet weights (``encoder_weights="imagenet"`` on vgg16) fc6 and fc7
start, as in the paper, from VGG16's classifier: its fc1 (25088 x 4096) and fc2
(4096 x 4096) dense kernels reshaped to 7x7x512x4096 and 1x1x4096x4096
convolutions. Keras downloads that classifier once (``include_top=True``, 528 MB);
``fc_weights`` may instead name a VGG16-with-top weights file, or None to start
fc6/fc7 from random weights.

On backbones other than VGG16 there is no classifier to convert (``fc_filters``
defaults to 0): ``score_fr`` reads the stride-32 features. On the pooling
backbones (vgg16, plain) the skips are the pool outputs, as in the paper; on
the others, the feature maps at strides 16 and 8.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models import backbones as bb
from kseg.models.layers import BilinearUpsampling, head

VARIANTS = {"32s": (), "16s": (16,), "8s": (16, 8)}


def fcn(num_classes: int, backbone: str = "vgg16", input_shape=(None, None, 3), encoder_weights=None,
        encoder_freeze: bool = False, activation: str | None = "softmax", variant: str = "8s",
        fc_filters: int | None = None, dropout: float = 0.5, backbone_kwargs: dict | None = None,
        fc_weights="auto", name: str | None = None):
    """Build FCN-``variant`` ("32s", "16s" or "8s").

    Args:
        fc_filters: width of fc6/fc7; default 4096 on vgg16 (the paper's), 0 (no fc
            layers) on other backbones.
        dropout: after fc6 and fc7.
        fc_weights: where fc6/fc7 start: "imagenet" (VGG16's classifier), a VGG16 include-top
            weights file, None (random), or "auto" (default): "imagenet" when the encoder loads
            ImageNet weights on vgg16 with 4096-wide fc layers, else None.
        backbone_kwargs: extra arguments for the backbone (e.g. ``filters`` of plain).
        The others as for :func:`kseg.models.unet`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
    inputs, feats = bb.encoder(backbone, input_shape, encoder_weights, encoder_freeze, backbone_kwargs,
                               output_stride=32)
    pooled = backbone in bb.POOLING_BACKBONES

    def skip(stride):
        if pooled:  # pool3 / pool4: the max pooling of the level above
            return layers.MaxPooling2D(2, name=f"pool{stride.bit_length() - 1}")(feats[stride // 2])
        return feats[stride]

    def upscore(x, factor, name):
        return layers.Conv2DTranspose(num_classes, 2 * factor, strides=factor, padding="same", use_bias=False,
                                      kernel_initializer=BilinearUpsampling(), name=name)(x)

    x = feats[32]
    if fc_filters is None:
        fc_filters = 4096 if backbone == "vgg16" else 0
    if fc_filters:
        x = layers.Conv2D(fc_filters, 7, padding="same", activation="relu", name="fc6")(x)
        x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Conv2D(fc_filters, 1, activation="relu", name="fc7")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
    x = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name="score_fr")(x)
    stride = 32
    for s in VARIANTS[variant]:
        x = upscore(x, 2, f"upscore{stride}to{s}")
        score = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score_pool{(s.bit_length() - 1)}")(skip(s))
        x = layers.Add(name=f"fuse_pool{(s.bit_length() - 1)}")([x, score])
        stride = s
    x = upscore(x, stride, f"upscore{stride}")
    outputs = head(x, num_classes, activation, kernel_size=None)
    model = keras.Model(inputs, outputs, name=name or f"fcn{variant}_{backbone}")
    if fc_weights == "auto":
        fc_weights = "imagenet" if (encoder_weights == "imagenet" and backbone == "vgg16"
                                    and fc_filters == 4096) else None
    if fc_weights is not None:
        load_vgg16_classifier(model, fc_weights, fc_filters, backbone)
    return model


def load_vgg16_classifier(model, weights, fc_filters: int, backbone: str) -> None:
    """Set ``fc6`` / ``fc7`` of an FCN from VGG16's classifier (``fc1`` / ``fc2``) as convolutions."""
    import os

    from kseg.errors import KsegError

    if backbone != "vgg16" or fc_filters != 4096:
        raise KsegError(f"fc_weights needs the vgg16 backbone with fc_filters=4096 (VGG16's classifier), "
                        f"got backbone {backbone!r}, fc_filters {fc_filters}")
    if weights != "imagenet":
        weights = os.fspath(weights)
        if not os.path.exists(weights):
            raise KsegError(f"{weights}: VGG16 classifier weights file not found")
    try:
        top = keras.applications.VGG16(include_top=True, weights=weights, classes=1000)
    except Exception as err:  # a wrong file, no network for the download, ...
        raise KsegError(f"cannot load VGG16's classifier weights from {weights!r} for fc6/fc7 "
                        f"({type(err).__name__}: {err})") from None
    for dense, conv in (("fc1", "fc6"), ("fc2", "fc7")):
        kernel, bias = top.get_layer(dense).get_weights()
        target = model.get_layer(conv)
        target.set_weights([kernel.reshape(target.kernel.shape), bias])
    del top


def fcn32s(num_classes: int, backbone: str = "vgg16", **kwargs):
    """FCN-32s: scores at stride 32, one x32 learned upsampling."""
    return fcn(num_classes, backbone, variant="32s", **kwargs)


def fcn16s(num_classes: int, backbone: str = "vgg16", **kwargs):
    """FCN-16s: + pool4's scores (stride 16), x16 upsampling."""
    return fcn(num_classes, backbone, variant="16s", **kwargs)


def fcn8s(num_classes: int, backbone: str = "vgg16", **kwargs):
    """FCN-8s: + pool4's and pool3's scores (strides 16 and 8), x8 upsampling."""
    return fcn(num_classes, backbone, variant="8s", **kwargs)
