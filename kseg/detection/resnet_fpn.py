"""The feature pyramid Mask R-CNN and Panoptic FPN stand on: a backbone, an FPN and the RPN head.

``resnet50`` is ResNet-50 in torchvision's layout (v1.5: the stride on the 3x3 convolution;
frozen batch normalisation, eps 1e-5; ImageNet mean/std normalisation of RGB in [0, 255]
inside the model), so torchvision's ImageNet and COCO weights load into it one to one
(:mod:`kseg.detection.torchvision_weights`); layer names are torchvision's module paths
with ``.`` as ``_`` (``layer1_0_conv1``). Any other kseg backbone (``mobilenetv2``,
``resnet34``, ...) gives its stride 4-32 maps to the same FPN.

:func:`feature_pyramid` is torchvision's ``FeaturePyramidNetwork`` with ``LastLevelMaxPool``:
1x1 lateral convolutions to 256 channels, nearest-neighbour top-down x2 upsampling and
addition, a 3x3 convolution per level, and P6 as P5 subsampled by 2 (for the RPN only).
Sizes must be multiples of 32 so each level is exactly half the one below (torchvision pads
its batch to a multiple of 32 the same way).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models.backbone_registry import features as backbone_features

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FPN_CHANNELS = 256
BLOCKS = (3, 4, 6, 3)  # ResNet-50


def _conv_bn(x, filters, kernel, stride, name, bn_name, relu=True, frozen=True, dilation=1):
    pad = dilation * (kernel - 1) // 2
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation, use_bias=False, name=name)(x)
    bn = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=bn_name)
    bn.trainable = not frozen
    x = bn(x)
    return layers.ReLU(name=f"{bn_name}_relu")(x) if relu else x


def _bottleneck(x, planes, stride, name, downsample, frozen=True, dilation=1):
    out = _conv_bn(x, planes, 1, 1, f"{name}_conv1", f"{name}_bn1", frozen=frozen)
    out = _conv_bn(out, planes, 3, stride, f"{name}_conv2", f"{name}_bn2", frozen=frozen, dilation=dilation)
    out = _conv_bn(out, planes * 4, 1, 1, f"{name}_conv3", f"{name}_bn3", relu=False, frozen=frozen)
    if downsample:
        x = _conv_bn(x, planes * 4, 1, stride, f"{name}_downsample_0", f"{name}_downsample_1", relu=False,
                     frozen=frozen)
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([out, x]))


def resnet50_layers(inputs, dilate=(False, False, False), frozen: bool = True) -> list:
    """torchvision's ResNet-50 body on RGB ``inputs`` in [0, 255]: the outputs of layer1 .. layer4.

    ``dilate``: torchvision's ``replace_stride_with_dilation`` for layer2, layer3, layer4 (the stride becomes a
    dilation of the later blocks' 3x3 convolutions, the first block keeping the previous one, as torchvision
    builds it); ``frozen``: batch normalisation not trainable (Mask R-CNN's frozen statistics)."""
    x = layers.Normalization(mean=[255.0 * m for m in IMAGENET_MEAN],
                             variance=[(255.0 * s) ** 2 for s in IMAGENET_STD], name="normalize")(inputs)
    x = _conv_bn(x, 64, 7, 2, "conv1", "bn1", frozen=frozen)
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)  # after a ReLU, zero padding equals -inf padding
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    outs, dilation = [], 1
    for i, (blocks, planes) in enumerate(zip(BLOCKS, (64, 128, 256, 512))):
        stride, previous = (2 if i > 0 else 1), dilation
        if i > 0 and dilate[i - 1]:
            dilation, stride = dilation * stride, 1
        for b in range(blocks):
            x = _bottleneck(x, planes, stride if b == 0 else 1, f"layer{i + 1}_{b}", downsample=b == 0,
                            frozen=frozen, dilation=previous if b == 0 else dilation)
        outs.append(x)
    return outs


def resnet50(inputs) -> dict[int, object]:
    """torchvision's ResNet-50 body on RGB ``inputs`` in [0, 255]: ``{4: C2, 8: C3, 16: C4, 32: C5}``."""
    return dict(zip((4, 8, 16, 32), resnet50_layers(inputs)))


def backbone_levels(backbone: str, inputs, weights=None) -> list:
    """C2..C5 (strides 4, 8, 16, 32) of ``backbone`` on ``inputs``; ``resnet50`` is torchvision's."""
    if backbone == "resnet50":
        feats = resnet50(inputs)
    else:
        feats = backbone_features(backbone, inputs, weights=weights)
    missing = [s for s in (4, 8, 16, 32) if s not in feats]
    if missing:
        from kseg.errors import KsegError
        raise KsegError(f"backbone {backbone!r} has no feature map at stride {missing[0]}: an FPN needs 4, 8, 16, 32")
    return [feats[s] for s in (4, 8, 16, 32)]


def feature_pyramid(levels, channels: int = FPN_CHANNELS) -> list:
    """torchvision's FPN over C2..C5: ``[P2, P3, P4, P5, P6]``, ``channels`` each."""
    inner = [layers.Conv2D(channels, 1, name=f"fpn_inner_blocks_{i}_0")(c) for i, c in enumerate(levels)]
    last = inner[-1]
    outs = [layers.Conv2D(channels, 3, padding="same", name="fpn_layer_blocks_3_0")(last)]
    for i in range(len(levels) - 2, -1, -1):
        up = layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_upsample_{i}")(last)
        last = layers.Add(name=f"fpn_add_{i}")([inner[i], up])
        outs.insert(0, layers.Conv2D(channels, 3, padding="same", name=f"fpn_layer_blocks_{i}_0")(last))
    outs.append(layers.MaxPooling2D(1, strides=2, name="fpn_pool")(outs[-1]))
    return outs


@keras.saving.register_keras_serializable("kseg")
class RPNHead(keras.layers.Layer):
    """torchvision's RPN head, shared by every level: a 3x3 convolution and ReLU, then per anchor an
    objectness logit (``A`` channels) and box deltas (``4A`` channels, ordered anchor-major as torchvision's
    ``view(N, A, 4, H, W)``). Weights start as torchvision's: normal(0, 0.01), zero biases."""

    def __init__(self, num_anchors: int = 3, channels: int = FPN_CHANNELS, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.channels = channels
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = layers.Conv2D(channels, 3, padding="same", activation="relu", kernel_initializer=init,
                                  name="conv_0_0")
        self.cls_logits = layers.Conv2D(num_anchors, 1, kernel_initializer=init, name="cls_logits")
        self.bbox_pred = layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init, name="bbox_pred")

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.conv.build(shape)
        self.cls_logits.build(shape[:-1] + (self.channels,))
        self.bbox_pred.build(shape[:-1] + (self.channels,))

    def call(self, feature):
        t = self.conv(feature)
        return self.cls_logits(t), self.bbox_pred(t)

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "channels": self.channels}


def pyramid_model(backbone: str = "resnet50", input_shape=(None, None, 3), weights=None,
                  trainable_layers: int = 3, channels: int = FPN_CHANNELS, name: str = "pyramid") -> keras.Model:
    """image -> ``[P2, P3, P4, P5, P6]``. Batch normalisation is frozen in every backbone (its ImageNet
    statistics; detection batches are small), as torchvision's and Detectron2's detectors do. For ``resnet50``,
    torchvision's ``trainable_backbone_layers``: only the last ``trainable_layers`` of (layer4, layer3, layer2,
    layer1, conv1) train."""
    inputs = keras.Input(input_shape, name="image")
    outs = feature_pyramid(backbone_levels(backbone, inputs, weights), channels)
    model = keras.Model(inputs, outs, name=name)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    if backbone == "resnet50":
        trainable = ("layer4", "layer3", "layer2", "layer1", "conv1")[:trainable_layers]
        for layer in model.layers:
            if layer.weights and not layer.name.startswith(("fpn_",) + trainable) and layer.name != "normalize":
                layer.trainable = False
    return model
