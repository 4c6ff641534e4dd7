"""Panoptic FPN (Kirillov et al., CVPR 2019) as Detectron2 builds it: Mask R-CNN plus a semantic branch on its FPN.

:class:`PanopticFPN` is :class:`~kseg.detection.maskrcnn.MaskRCNN` (``num_things`` thing classes, so
``num_things + 1`` classes with the background) with :class:`SemanticHead`, Detectron2's
``SemSegFPNHead``, on P2..P5: per level a stack of 3x3 convolutions (128 channels, no bias), GroupNorm
(32 groups) and ReLU, each followed by a x2 bilinear upsampling while above stride 4 (P2: one
convolution, P3: one and x2, P4: two, P5: three), the four maps summed, a 1x1 convolution to
``num_stuff + 1`` classes and a x4 bilinear upsampling to the input's size (``align_corners=False``,
as Keras' bilinear resize). Weights start as Detectron2's ``c2_msra_fill``: He normal (fan out), zero
biases.

Label convention of the semantic head (Detectron2's, ``prepare_panoptic_fpn.py``): class 0 stands for
all things, classes 1..``num_stuff`` are the stuff categories in increasing category id, 255 is ignored.
:func:`semantic_targets` turns a map of category ids (``kseg shapes``' ``semantic/*.png``: things 1-5,
stuff 6-8) into these labels; category id 0 and 255 (void) become 255.

Inputs are :class:`MaskRCNN`'s: a dict with ``image`` and optionally ``image_size``, and for training
the targets ``boxes``, ``classes``, ``masks``, ``crowd`` and ``semantic`` ([B, H, W] labels of the
padded image as above; pad with 255). Inference returns the detections dict plus ``semantic``:
[B, H, W, num_stuff + 1] softmax probabilities. Training returns ``MaskRCNN.losses_for``'s loss dict
(instance losses, weight 1) plus ``semantic``: the cross-entropy averaged over the pixels that are not
ignored (0 when all are), times ``semantic_weight`` (Detectron2's ``SEM_SEG_HEAD.LOSS_WEIGHT``, 0.5).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from kseg.detection.maskrcnn import MaskRCNN
from kseg.errors import KsegError
from kseg.models.resampling import bilinear_upsample

THINGS = 0  # the semantic head's class for every thing
IGNORE = 255
SEMANTIC_WEIGHT = 0.5


def _msra():
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def semantic_lookup(stuff_ids, void_ids=(0, IGNORE)) -> np.ndarray:
    """A 256-entry uint8 table: category id -> semantic head label (see the module's docstring).

    ``stuff_ids`` are the stuff categories' ids (sorted here: label ``k + 1`` is the ``k``-th smallest);
    every other id is a thing (label 0) except ``void_ids`` (label 255). Works as ``tf.gather(table, ids)``
    inside a ``tf.data`` pipeline too.
    """
    stuff = sorted(int(s) for s in stuff_ids)
    if len(set(stuff)) != len(stuff) or any(not 0 < s < 255 for s in stuff) or len(stuff) > 254:
        raise KsegError(f"stuff category ids must be distinct, in 1..254 and at most 254; got {list(stuff_ids)}")
    table = np.full(256, THINGS, np.uint8)
    for k, s in enumerate(stuff):
        table[s] = k + 1
    for v in void_ids:
        table[int(v)] = IGNORE
    return table


def semantic_targets(category_map, stuff_ids) -> np.ndarray:
    """``[..., H, W]`` category ids (0..255) -> uint8 semantic head labels: things 0, stuff 1..S, void 255."""
    ids = np.asarray(category_map)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise KsegError(f"a category map holds ids 0..255; got {ids.min()}..{ids.max()}")
    return semantic_lookup(stuff_ids)[ids.astype(np.int64)]


def semantic_loss(logits, labels, weight: float = SEMANTIC_WEIGHT, ignore: int = IGNORE):
    """``weight`` x the mean cross-entropy of ``logits`` [B, H, W, C] against ``labels`` [B, H, W] over the
    pixels whose label is not ``ignore`` (PyTorch's ``cross_entropy(ignore_index=...)``; 0 if none is left)."""
    logits = ops.cast(logits, "float32")
    labels = ops.cast(labels, "int32")
    valid = ops.not_equal(labels, ignore)
    ce = ops.sparse_categorical_crossentropy(ops.where(valid, labels, 0), logits, from_logits=True)
    valid = ops.cast(valid, "float32")
    return weight * ops.sum(ce * valid) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable("kseg")
class SemanticHead(keras.layers.Layer):
    """Detectron2's ``SemSegFPNHead`` (see the module's docstring): ``[P2, P3, P4, P5]`` -> logits at 4 x P2's size."""

    def __init__(self, num_classes: int, channels: int = 128, groups: int = 32, strides=(4, 8, 16, 32),
                 common_stride: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.channels, self.groups = num_classes, channels, groups
        self.strides, self.common_stride = tuple(strides), common_stride
        self.depths = [max(1, int(math.log2(s) - math.log2(common_stride))) for s in self.strides]
        self.convs, self.norms = [], []
        for i, depth in enumerate(self.depths):
            for k in range(depth):
                self.convs.append(layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                                kernel_initializer=_msra(), name=f"level{i}_conv{k}"))
                self.norms.append(layers.GroupNormalization(groups, epsilon=1e-5, name=f"level{i}_norm{k}"))
        self.predictor = layers.Conv2D(num_classes, 1, kernel_initializer=_msra(), name="predictor")

    def build(self, input_shape):
        shapes = list(input_shape)
        j = 0
        for shape, depth in zip(shapes, self.depths):
            shape = tuple(shape)
            for _ in range(depth):
                self.convs[j].build(shape)
                shape = shape[:-1] + (self.channels,)
                self.norms[j].build(shape)
                j += 1
        self.predictor.build((None, None, None, self.channels))

    def call(self, levels):
        total, j = None, 0
        for x, stride, depth in zip(levels, self.strides, self.depths):
            for _ in range(depth):
                x = ops.relu(self.norms[j](self.convs[j](x)))
                j += 1
                if stride != self.common_stride:
                    x = _upsample(x, 2)
            total = x if total is None else total + x
        return _upsample(self.predictor(total), self.common_stride)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "channels": self.channels,
                "groups": self.groups, "strides": list(self.strides), "common_stride": self.common_stride}


def _upsample(x, factor: int):
    """Bilinear x ``factor`` (half-pixel centres: PyTorch's ``interpolate(..., align_corners=False)``)."""
    return bilinear_upsample(x, factor)


@keras.saving.register_keras_serializable("kseg")
class PanopticFPN(MaskRCNN):
    """See the module's docstring. Defaults are Detectron2's COCO model: 80 things, 53 stuff classes."""

    def __init__(self, num_things: int = 80, num_stuff: int = 53, semantic_weight: float = SEMANTIC_WEIGHT,
                 **kwargs):
        num_classes = kwargs.pop("num_classes", num_things + 1)
        if num_classes != num_things + 1:
            raise KsegError(f"PanopticFPN: num_classes ({num_classes}) must be num_things + 1 ({num_things + 1})")
        super().__init__(num_classes=num_classes, **kwargs)
        self.num_things, self.num_stuff, self.semantic_weight = num_things, num_stuff, semantic_weight
        self.loss_trackers["semantic"] = keras.metrics.Mean(name="semantic")
        self.semantic_head = SemanticHead(num_stuff + 1, name="semantic_head")

    def get_config(self):
        config = super().get_config()
        config.pop("num_classes", None)
        return {**config, "num_things": self.num_things, "num_stuff": self.num_stuff,
                "semantic_weight": self.semantic_weight}

    def build(self, input_shape=None):
        super().build(input_shape)
        self.semantic_head.build([(None, None, None, self.settings["fpn_channels"])] * 4)

    def semantic_logits(self, levels):
        """The semantic head's logits [B, H, W, num_stuff + 1] from the pyramid ``levels`` (P2.. first)."""
        return self.semantic_head(list(levels[:4]))

    def call(self, inputs, training=False):
        images, sizes = self.unpack(inputs)
        levels = self.pyramid(images, training=training)
        logits = self.semantic_logits(levels)
        if training and isinstance(inputs, dict) and "boxes" in inputs:
            if "semantic" not in inputs:
                raise KsegError("PanopticFPN training needs a 'semantic' target [B, H, W] beside boxes, classes, "
                                "masks and crowd: 0 = things, 1..num_stuff = stuff, 255 = ignore")
            losses = dict(self.losses_for(images, levels, sizes, inputs))
            losses["semantic"] = semantic_loss(logits, inputs["semantic"], self.semantic_weight)
            return losses
        out = dict(self.instances(images, levels, sizes))
        out["semantic"] = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        return out


def panoptic_fpn(num_things: int = 80, num_stuff: int = 53, backbone: str = "resnet50", input_shape=(None, None, 3),
                 weights=None, **kwargs) -> PanopticFPN:
    """A built :class:`PanopticFPN`. ``weights``: None (random), ``"imagenet"`` (the backbone's ImageNet weights:
    torchvision's ResNet-50 for ``resnet50``, the backbone's own otherwise) or a ``.weights.h5`` path."""
    if weights == "imagenet" and backbone != "resnet50":
        kwargs["backbone_weights"] = "imagenet"
    model = PanopticFPN(num_things=num_things, num_stuff=num_stuff, backbone=backbone, **kwargs)
    model.build((None, *input_shape))
    if weights == "imagenet" and backbone == "resnet50":
        from kseg.detection.torchvision_weights import fetch, load_torchvision

        load_torchvision(model, fetch("imagenet"), "imagenet")
    elif weights not in (None, "imagenet"):
        if not str(weights).endswith(".weights.h5"):
            raise KsegError(f"panoptic_fpn weights must be None, 'imagenet' or a .weights.h5 file; got {weights!r}")
        model.load_weights(weights)
    return model
