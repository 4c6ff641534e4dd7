"""Mask R-CNN's heads on pooled region features, as torchvision builds them.

:class:`BoxHead` is ``TwoMLPHead`` + ``FastRCNNPredictor``: the 7x7x256 RoI features flattened,
two fully connected layers of 1024 with ReLU (``fc6``, ``fc7``), then class logits
(``num_classes`` with background at 0) and class-specific box deltas (``4 * num_classes``,
class-major). kseg's RoI features are NHWC, so ``fc6`` reads them in (y, x, channel) order;
the torchvision converter permutes ``fc6``'s weights from torchvision's (channel, y, x).

:class:`MaskHead` is ``MaskRCNNHeads`` + ``MaskRCNNPredictor``: four 3x3 convolutions of 256
with ReLU on 14x14 RoI features, a 2x2 stride-2 transposed convolution with ReLU (28x28),
and a 1x1 convolution to one mask logit map per class. Initialisers follow torchvision
(Kaiming normal, fan-out, for the mask layers; zero biases).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.detection.resnet_fpn import FPN_CHANNELS

_KAIMING_OUT = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


@keras.saving.register_keras_serializable("kseg")
class BoxHead(keras.layers.Layer):
    """RoI features ``[K, 7, 7, C]`` -> ``(class logits [K, num_classes], deltas [K, num_classes, 4])``."""

    def __init__(self, num_classes: int, representation: int = 1024, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.representation = representation
        self.flatten = layers.Flatten(name="flatten")
        self.fc6 = layers.Dense(representation, activation="relu", name="fc6")
        self.fc7 = layers.Dense(representation, activation="relu", name="fc7")
        self.cls_score = layers.Dense(num_classes, name="cls_score")
        self.bbox_pred = layers.Dense(4 * num_classes, name="bbox_pred")

    def build(self, input_shape):
        flat = 1
        for d in input_shape[1:]:
            flat *= d
        self.fc6.build((None, flat))
        self.fc7.build((None, self.representation))
        self.cls_score.build((None, self.representation))
        self.bbox_pred.build((None, self.representation))

    def call(self, features):
        x = self.fc7(self.fc6(self.flatten(features)))
        deltas = keras.ops.reshape(self.bbox_pred(x), (-1, self.num_classes, 4))
        return self.cls_score(x), deltas

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "representation": self.representation}


@keras.saving.register_keras_serializable("kseg")
class MaskHead(keras.layers.Layer):
    """RoI features ``[K, 14, 14, C]`` -> mask logits ``[K, 28, 28, num_classes]``."""

    def __init__(self, num_classes: int, channels: int = FPN_CHANNELS, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.channels = channels
        self.convs = [layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=_KAIMING_OUT,
                                    name=f"mask_head_{i}_0") for i in range(4)]
        self.conv5_mask = layers.Conv2DTranspose(channels, 2, strides=2, activation="relu",
                                                 kernel_initializer=_KAIMING_OUT, name="conv5_mask")
        self.mask_fcn_logits = layers.Conv2D(num_classes, 1, kernel_initializer=_KAIMING_OUT, name="mask_fcn_logits")

    def build(self, input_shape):
        shape = (None, input_shape[1], input_shape[2], input_shape[3])
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:3] + (self.channels,)
        self.conv5_mask.build(shape)
        up = (None, None if shape[1] is None else 2 * shape[1], None if shape[2] is None else 2 * shape[2],
              self.channels)
        self.mask_fcn_logits.build(up)

    def call(self, features):
        x = features
        for conv in self.convs:
            x = conv(x)
        return self.mask_fcn_logits(self.conv5_mask(x))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "channels": self.channels}
