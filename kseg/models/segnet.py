"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017).

An encoder of 2x2 max poolings (VGG16's 13 convolutions, or the plain U-Net
encoder) and a mirrored decoder that *unpools* with the encoder's max-pooling
indices: each value goes back to the position its window's maximum came from,
the others are zero (:class:`kseg.models.layers.MaxUnpooling2D`; no learned
upsampling and no skip concatenation). Each decoder stage has as many 3x3
conv-BN-ReLU as its encoder stage, the last one narrowing to the next stage's
width (VGG16: 512-512-512 / 512-512-256 / 256-256-128 / 128-64 / 64), and the
last is the classifier. The indices are recomputed from the stored pre-pooling
maps (the first maximum on ties), which is what a pooling with indices returns.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.errors import KsegError
from kseg.models import backbones as bb
from kseg.models.layers import MaxUnpooling2D, conv_bn_relu, head

# convolutions per encoder stage, stride 1 first
STAGE_CONVS = {"vgg16": (2, 2, 3, 3, 3), "plain": (2, 2, 2, 2, 2)}


def segnet(num_classes: int, backbone: str = "vgg16", input_shape=(None, None, 3), encoder_weights=None,
           encoder_freeze: bool = False, activation: str | None = "softmax", decoder_batchnorm: bool = True,
           backbone_kwargs: dict | None = None, name: str | None = None):
    """Build a SegNet on ``backbone`` ("vgg16", the paper's, or "plain").

    Args:
        decoder_batchnorm: BN after each decoder convolution (the paper's).
        backbone_kwargs: extra arguments for the backbone (e.g. ``filters`` of plain).
        The others as for :func:`kseg.models.unet`.
    """
    if backbone not in STAGE_CONVS:
        raise KsegError(f"segnet needs a backbone that max-pools at every stride: {', '.join(STAGE_CONVS)}; "
                        f"got {backbone!r}")
    inputs, feats = bb.encoder(backbone, input_shape, encoder_weights, encoder_freeze, backbone_kwargs)
    x = feats[32] if 32 in feats else layers.MaxPooling2D(2, name="pool5")(feats[16])
    convs = STAGE_CONVS[backbone]
    for level in range(4, -1, -1):
        stride = 2 ** level
        x = MaxUnpooling2D(name=f"unpool{level + 1}")([x, feats[stride]])
        width = int(feats[stride].shape[-1])
        n = convs[level] - (1 if level == 0 else 0)  # the first stage's last convolution is the classifier
        for k in range(n):
            last = k == convs[level] - 1
            f = int(feats[stride // 2].shape[-1]) if last else width
            x = conv_bn_relu(x, f, 3, use_batchnorm=decoder_batchnorm, name=f"decoder{level + 1}_conv{k + 1}")
    outputs = head(x, num_classes, activation, kernel_size=3)
    return keras.Model(inputs, outputs, name=name or f"segnet_{backbone}")
