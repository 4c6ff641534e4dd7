"""Mask R-CNN's training targets for one image, as torchvision's ``RegionProposalNetwork`` and ``RoIHeads`` make
them, on fixed shapes.

:func:`rpn_targets`: anchors matched to the ground truth at IoU 0.7 / 0.3 with low-quality matches
(every ground truth keeps its best anchors), 256 anchors sampled with half positives at most, box deltas
encoded with weights (1, 1, 1, 1). :func:`roi_targets`: the proposals with the ground-truth boxes appended
(torchvision's ``add_gt_proposals``), matched at IoU 0.5, 512 sampled with a quarter positives at most,
labels the matched class (0 background), deltas encoded with weights (10, 10, 5, 5). The sampled RoIs come
back positives first, so the first ``max_mask_rois`` rows hold every positive the mask head trains on (a
quarter of 512 is torchvision's 128). Padded ground truth (class 0) never matches; crowd boxes are never
positives and what matches them best is ignored (:class:`kseg.detection.matching.Matcher`).
"""

from __future__ import annotations

from keras import ops

from kseg.detection.boxes import box_iou
from kseg.detection.matching import BELOW_LOW_THRESHOLD, Matcher, sample_balanced

RPN_MATCHER = Matcher(0.7, 0.3, allow_low_quality_matches=True)
ROI_MATCHER = Matcher(0.5, 0.5, allow_low_quality_matches=False)


def _labels(matched, positive_value):
    return ops.where(matched >= 0, positive_value, ops.where(matched == BELOW_LOW_THRESHOLD, 0, -1))


def rpn_targets(anchors, gt_boxes, gt_valid, gt_crowd, coder, seed_generator, batch_size=256, positive_fraction=0.5):
    """``(labels [N] 1/0/-1, regression targets [N, 4], sampled positives [N], sampled negatives [N])``."""
    matched = RPN_MATCHER(box_iou(gt_boxes, anchors), gt_valid, gt_crowd)
    labels = _labels(matched, 1)
    pos, neg = sample_balanced(labels, batch_size, positive_fraction, seed_generator)
    targets = coder.encode(ops.take(gt_boxes, ops.maximum(matched, 0), axis=0), anchors)
    return labels, _finite_where(labels > 0, targets), pos, neg


def roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, gt_crowd, coder, seed_generator,
                batch_size=512, positive_fraction=0.25):
    """The sampled RoIs of one image, positives first: ``(rois [S, 4], labels [S], regression targets [S, 4],
    sampled [S], matched ground truth [S])`` with ``S = batch_size``; rows past the sample are not ``sampled``."""
    gt_valid = gt_classes > 0
    boxes = ops.concatenate([proposals, gt_boxes], axis=0)
    valid = ops.concatenate([ops.cast(proposal_valid, "bool"),
                             ops.logical_and(gt_valid, ops.logical_not(ops.cast(gt_crowd, "bool")))], axis=0)
    matched = ROI_MATCHER(box_iou(gt_boxes, boxes), gt_valid, gt_crowd)
    labels = _labels(matched, ops.take(gt_classes, ops.maximum(matched, 0)))
    labels = ops.where(valid, labels, -1)
    pos, neg = sample_balanced(labels, batch_size, positive_fraction, seed_generator)
    order = ops.cast(pos, "float32") * 2.0 + ops.cast(neg, "float32")
    n = ops.shape(order)[0]
    batch_size = min(batch_size, n) if isinstance(n, int) else batch_size
    order = order - ops.cast(ops.arange(n), "float32") / ops.cast(n, "float32")  # stable: lower index first
    _, idx = ops.top_k(order, k=batch_size)
    sampled = ops.take(ops.logical_or(pos, neg), idx)
    rois = ops.take(boxes, idx, axis=0)
    gt_index = ops.take(ops.maximum(matched, 0), idx)
    labels = ops.where(sampled, ops.take(labels, idx), 0)
    targets = coder.encode(ops.take(gt_boxes, gt_index, axis=0), rois)
    return rois, labels, _finite_where(labels > 0, targets), sampled, gt_index


def _finite_where(positive, targets):
    """Regression targets of positives; 0 elsewhere (a padded or empty box encodes to inf there, and inf x 0 in a
    masked loss would be NaN)."""
    return ops.where(positive[:, None], targets, 0.0)
