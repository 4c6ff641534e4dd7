"""Mask R-CNN (He et al., ICCV 2017) as torchvision's ``maskrcnn_resnet50_fpn``, in Keras layers and ops.

``MaskRCNN(num_classes, backbone)`` takes RGB images in [0, 255] whose height and width are
multiples of 32 (``image``; optionally ``image_size``, each image's valid height and width
inside its padding, as torchvision's ``image_sizes``) and returns, per image, at most
``detections`` detections: ``boxes`` (xyxy pixels of the input), ``scores``, ``classes``
(0 = none), ``masks`` (28x28 probabilities in the box; :func:`kseg.detection.masks.paste_masks`
puts them on the image) and ``valid``.

Inference is torchvision's: the RPN keeps the ``pre_nms_top_n`` best anchors per level,
decodes them, clips, drops boxes under 1e-3 pixels, runs NMS per level at 0.7 and keeps
``post_nms_top_n`` proposals; the box head scores 7x7 RoI-aligned features, decodes
class-specific boxes (weights 10, 10, 5, 5), drops scores <= 0.05 and boxes under 1e-2 pixels,
runs NMS per class at 0.5 and keeps ``detections``; the mask head runs on 14x14 features of
the kept boxes and the mask of the predicted class is kept. One deliberate difference, for fixed
shapes: per-class NMS runs over the ``box_candidates`` best (class, proposal) pairs, not all
of them (greedy NMS keeps the same boxes whenever the kept ones rank among those candidates).
"""

from __future__ import annotations

import keras
from keras import ops

from kseg.detection import anchors as anchor_lib
from kseg.detection.boxes import BoxCoder, clip_boxes, small_box_mask
from kseg.detection.nms import batched_nms
from kseg.detection.resnet_fpn import RPNHead, pyramid_model
from kseg.detection.roi_align import multiscale_roi_align
from kseg.detection.roi_heads import BoxHead, MaskHead

NEG = -1e9
LOSSES = ("rpn_objectness", "rpn_box", "classifier", "box", "mask")


def level_anchors_graph(feature_h, feature_w, stride_h, stride_w, cell):
    """:func:`kseg.detection.anchors.level_anchors` with dynamic feature sizes (``cell``: the cell anchors)."""
    xs = ops.cast(ops.arange(feature_w) * stride_w, "float32")
    ys = ops.cast(ops.arange(feature_h) * stride_h, "float32")
    sy, sx = ops.meshgrid(ys, xs, indexing="ij")
    sx, sy = ops.reshape(sx, (-1,)), ops.reshape(sy, (-1,))
    shifts = ops.stack([sx, sy, sx, sy], axis=1)
    return ops.reshape(shifts[:, None, :] + ops.convert_to_tensor(cell)[None], (-1, 4))


@keras.saving.register_keras_serializable("kseg")
class MaskRCNN(keras.Model):
    """See the module's docstring. ``num_classes`` counts the background (torchvision's COCO model: 91)."""

    def __init__(self, num_classes: int = 91, backbone: str = "resnet50", backbone_weights=None,
                 trainable_layers: int = 3, fpn_channels: int = 256, representation: int = 1024,
                 pre_nms_top_n: int = 1000, post_nms_top_n: int = 1000, rpn_nms: float = 0.7,
                 score_threshold: float = 0.05, box_nms: float = 0.5, detections: int = 100,
                 box_candidates: int = 4000, anchor_sizes=anchor_lib.MASKRCNN_SIZES,
                 aspect_ratios=anchor_lib.MASKRCNN_ASPECT_RATIOS, train_pre_nms_top_n: int = 2000,
                 train_post_nms_top_n: int = 2000, rpn_batch: int = 256, roi_batch: int = 512,
                 roi_positive_fraction: float = 0.25, max_mask_rois: int = 128, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(num_classes=num_classes, backbone=backbone, trainable_layers=trainable_layers,
                             fpn_channels=fpn_channels, representation=representation,
                             pre_nms_top_n=pre_nms_top_n, post_nms_top_n=post_nms_top_n, rpn_nms=rpn_nms,
                             score_threshold=score_threshold, box_nms=box_nms, detections=detections,
                             box_candidates=box_candidates, anchor_sizes=[list(s) for s in anchor_sizes],
                             aspect_ratios=list(aspect_ratios), train_pre_nms_top_n=train_pre_nms_top_n,
                             train_post_nms_top_n=train_post_nms_top_n, rpn_batch=rpn_batch, roi_batch=roi_batch,
                             roi_positive_fraction=roi_positive_fraction, max_mask_rois=max_mask_rois, seed=seed)
        self.num_classes = num_classes
        self.pyramid = pyramid_model(backbone, weights=backbone_weights, trainable_layers=trainable_layers,
                                     channels=fpn_channels)
        self.cell_anchors = [anchor_lib.cell_anchors(s, aspect_ratios) for s in anchor_sizes]
        self.rpn_head = RPNHead(len(self.cell_anchors[0]), channels=fpn_channels, name="rpn_head")
        self.box_head = BoxHead(num_classes, representation, name="box_head")
        self.mask_head = MaskHead(num_classes, channels=fpn_channels, name="mask_head")
        self.rpn_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in LOSSES}

    def get_config(self):
        return {**super().get_config(), **self.settings}

    def build(self, input_shape=None):
        shape = input_shape["image"] if isinstance(input_shape, dict) else input_shape
        shape = tuple(shape) if shape is not None else (None, None, None, 3)
        c = self.settings["fpn_channels"]
        self.pyramid.build(shape)
        self.rpn_head.build((None, None, None, c))
        self.box_head.build((None, 7, 7, c))
        self.mask_head.build((None, 14, 14, c))
        self.built = True

    # ------------------------------------------------------------------ the network's raw outputs
    def rpn_outputs(self, images, levels=None):
        """``(pyramid levels, objectness [B, N], deltas [B, N, 4], anchors [N, 4], level of each anchor [N])``."""
        levels = self.pyramid(images) if levels is None else levels
        h, w = ops.shape(images)[1], ops.shape(images)[2]
        objs, deltas, anchors, level_ids = [], [], [], []
        for i, (feature, cell) in enumerate(zip(levels, self.cell_anchors)):
            obj, delta = self.rpn_head(feature)
            fh, fw = ops.shape(feature)[1], ops.shape(feature)[2]
            objs.append(ops.reshape(obj, (ops.shape(obj)[0], -1)))
            deltas.append(ops.reshape(delta, (ops.shape(delta)[0], -1, 4)))
            anchors.append(level_anchors_graph(fh, fw, h // fh, w // fw, cell))
            level_ids.append(ops.full((fh * fw * len(cell),), i, "int32"))
        return (levels, ops.concatenate(objs, 1), ops.concatenate(deltas, 1), ops.concatenate(anchors, 0),
                ops.concatenate(level_ids, 0))

    # ------------------------------------------------------------------ proposals (one image)
    def _top_per_level(self, obj, level_ids, k):
        """Indices of the ``k`` best anchors of each level, and whether each is real."""
        picks, valid = [], []
        for i in range(len(self.cell_anchors)):
            in_level = ops.equal(level_ids, i)
            scores = ops.where(in_level, obj, NEG)
            values, idx = ops.top_k(ops.concatenate([scores, ops.full((k,), NEG)]), k=k)
            picks.append(ops.minimum(idx, ops.shape(obj)[0] - 1))
            valid.append(values > NEG / 2)
        return ops.concatenate(picks, 0), ops.concatenate(valid, 0)

    def proposals(self, obj, deltas, anchors, level_ids, image_size, training=False):
        """torchvision's ``RegionProposalNetwork.filter_proposals`` for one image: ``(boxes [P, 4], valid [P])``."""
        pre, post = ("train_pre_nms_top_n", "train_post_nms_top_n") if training else ("pre_nms_top_n", "post_nms_top_n")
        idx, valid = self._top_per_level(obj, level_ids, self.settings[pre])
        boxes = self.rpn_coder.decode(ops.take(deltas, idx, 0), ops.take(anchors, idx, 0))
        boxes = clip_boxes(boxes, image_size[0], image_size[1])
        scores = ops.sigmoid(ops.take(obj, idx, 0))
        valid = valid & small_box_mask(boxes, 1e-3) & (scores >= 0.0)
        keep, kept = batched_nms(boxes, scores, ops.take(level_ids, idx, 0), self.settings["rpn_nms"],
                                 self.settings[post], valid)
        return ops.take(boxes, keep, 0), kept

    # ------------------------------------------------------------------ detections (one image)
    def detections(self, logits, deltas, proposals, proposal_valid, image_size):
        """torchvision's ``RoIHeads.postprocess_detections`` for one image: boxes, scores, classes, valid."""
        c = self.num_classes
        boxes = self.box_coder.decode(ops.reshape(deltas, (-1, 4)), ops.repeat(proposals, c, axis=0))
        boxes = ops.reshape(clip_boxes(boxes, image_size[0], image_size[1]), (-1, c, 4))[:, 1:]
        scores = ops.softmax(logits, axis=-1)[:, 1:]
        classes = ops.broadcast_to(ops.arange(1, c, dtype="int32")[None], ops.shape(scores))
        boxes, scores, classes = ops.reshape(boxes, (-1, 4)), ops.reshape(scores, (-1,)), ops.reshape(classes, (-1,))
        valid = ops.reshape(ops.broadcast_to(proposal_valid[:, None], (ops.shape(logits)[0], c - 1)), (-1,))
        valid = valid & (scores > self.settings["score_threshold"]) & small_box_mask(boxes, 1e-2)
        m = self.settings["box_candidates"]
        top, cand = ops.top_k(ops.concatenate([ops.where(valid, scores, NEG), ops.full((m,), NEG)]), k=m)
        cand = ops.minimum(cand, ops.shape(scores)[0] - 1)
        boxes, scores, classes = ops.take(boxes, cand, 0), ops.take(scores, cand, 0), ops.take(classes, cand, 0)
        keep, kept = batched_nms(boxes, scores, classes, self.settings["box_nms"], self.settings["detections"],
                                 top > NEG / 2)
        return (ops.take(boxes, keep, 0), ops.where(kept, ops.take(scores, keep, 0), 0.0),
                ops.where(kept, ops.take(classes, keep, 0), 0), kept)

    # ------------------------------------------------------------------ the whole inference
    @staticmethod
    def unpack(inputs):
        """``(images float32 [B, H, W, 3], valid sizes float32 [B, 2])`` from an image batch or a dict holding
        ``image`` and optionally ``image_size``."""
        images = ops.cast(inputs["image"] if isinstance(inputs, dict) else inputs, "float32")
        b, h, w = ops.shape(images)[0], ops.shape(images)[1], ops.shape(images)[2]
        sizes = inputs.get("image_size") if isinstance(inputs, dict) else None
        if sizes is None:
            sizes = ops.broadcast_to(ops.stack([h, w])[None], (b, 2))
        return images, ops.cast(sizes, "float32")

    def call(self, inputs, training=False):
        images, sizes = self.unpack(inputs)
        levels = self.pyramid(images, training=training)
        if training and isinstance(inputs, dict) and "boxes" in inputs:
            return self.losses_for(images, levels, sizes, inputs)
        return self.instances(images, levels, sizes)

    def losses_for(self, images, levels, sizes, targets):
        """torchvision's five training losses (RPN objectness and boxes, box head classes and boxes, masks) of
        a batch with ``targets`` (``boxes`` [B, G, 4], ``classes`` [B, G] with 0 = padding, ``masks`` [B, G, H, W],
        optional ``crowd`` [B, G]): a dict of scalars whose sum :meth:`compute_loss` minimises."""
        from kseg.detection.training import maskrcnn_losses

        return maskrcnn_losses(self, images, levels, sizes, targets)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The sum of the loss dict :meth:`call` returns in training (plus any regularisation losses), divided
        by the replicas in sync under a ``tf.distribute`` strategy (Keras sums the replicas' gradients)."""
        if not isinstance(y_pred, dict) or "boxes" in y_pred:
            return ops.convert_to_tensor(0.0)  # detections, not losses: Keras's evaluate has nothing to score
        total = ops.convert_to_tensor(0.0)
        for name, value in y_pred.items():
            total = total + value
            if name in self.loss_trackers:
                self.loss_trackers[name].update_state(value)
        total = total + (ops.sum(self.losses) if self.losses else 0.0)
        return total / _replicas()

    def instances(self, images, levels, sizes):
        """The detections dict from the pyramid ``levels`` of ``images`` (valid ``sizes`` [B, 2])."""
        levels, obj, deltas, anchors, level_ids = self.rpn_outputs(images, levels)
        props, pvalid = ops.map(lambda a: self.proposals(a[0], a[1], anchors, level_ids, a[2]), (obj, deltas, sizes))
        return self.heads(levels, props, pvalid, sizes)

    def _pool(self, levels, boxes, size):
        """RoI-align ``boxes`` [B, K, 4] on P2..P5: ``[B * K, size, size, C]``."""
        b, k = ops.shape(boxes)[0], ops.shape(boxes)[1]
        batch_index = ops.repeat(ops.arange(b, dtype="int32"), k)
        return multiscale_roi_align(levels[:4], ops.reshape(boxes, (-1, 4)), batch_index, size, 2,
                                    scales=(0.25, 0.125, 0.0625, 0.03125))

    def heads(self, levels, props, pvalid, sizes):
        """Box and mask heads on proposals ``props`` [B, P, 4]: the detections dict."""
        b, p = ops.shape(props)[0], ops.shape(props)[1]
        logits, deltas = self.box_head(self._pool(levels, props, 7))
        logits = ops.reshape(logits, (b, p, self.num_classes))
        deltas = ops.reshape(deltas, (b, p, self.num_classes, 4))
        boxes, scores, classes, valid = ops.map(
            lambda a: self.detections(a[0], a[1], a[2], a[3], a[4]), (logits, deltas, props, pvalid, sizes))
        d = ops.shape(boxes)[1]
        mask_logits = self.mask_head(self._pool(levels, boxes, 14))  # [B * D, 28, 28, C]
        onehot = ops.one_hot(ops.reshape(classes, (-1,)), self.num_classes)
        masks = ops.sigmoid(ops.sum(mask_logits * onehot[:, None, None, :], axis=-1))
        masks = ops.reshape(masks, (b, d, ops.shape(masks)[1], ops.shape(masks)[2]))
        return {"boxes": boxes, "scores": scores, "classes": classes, "masks": masks, "valid": valid}


def _replicas() -> float:
    if keras.backend.backend() != "tensorflow":
        return 1.0
    import tensorflow as tf

    return float(tf.distribute.get_strategy().num_replicas_in_sync)


def maskrcnn(num_classes: int = 91, backbone: str = "resnet50", input_shape=(None, None, 3), weights=None,
             **kwargs) -> MaskRCNN:
    """A built :class:`MaskRCNN`; ``weights``: None, ``"coco"`` (torchvision's COCO model, 91 classes),
    ``"imagenet"`` (torchvision's ResNet-50 backbone) or a ``.pth`` / ``.weights.h5`` path."""
    model = MaskRCNN(num_classes=num_classes, backbone=backbone, **kwargs)
    model.build((None, *input_shape))
    if weights is not None:
        from kseg.detection.torchvision_weights import SOURCES, fetch, load_torchvision

        if weights in SOURCES:
            load_torchvision(model, fetch(weights), weights)
        elif str(weights).endswith(".pth"):
            load_torchvision(model, weights, "coco")
        else:
            model.load_weights(weights)
    return model

