"""torchvision's Mask R-CNN losses (``rpn.py``'s ``compute_loss``, ``roi_heads.py``'s ``fastrcnn_loss`` and
``maskrcnn_loss``) on fixed shapes: every function takes all rows of one image (or of a flattened batch)
with masks saying which rows were sampled, instead of torchvision's index lists.

- :func:`rpn_loss`: objectness is binary cross-entropy with logits, the mean over the sampled anchors
  (positives and negatives); the box loss is smooth L1 (``beta = 1/9``) summed over the sampled positives'
  four deltas, divided by the number of sampled anchors.
- :func:`box_head_loss`: cross-entropy over the sampled proposals' class logits (mean); smooth L1
  (``beta = 1/9``) on the deltas of each sampled positive's ground-truth class, summed, divided by the
  number of sampled proposals.
- :func:`mask_loss`: binary cross-entropy with logits between the positive proposals' ground-truth-class
  mask logits and their ``M x M`` targets, the mean over positives x M x M.

Deliberate difference: where torchvision divides by zero (no sampled rows gives NaN there), these give 0.
:func:`mask_loss` with no positive is 0 with a zero (finite) gradient, as torchvision's ``sum() * 0``.
Losses are float32 scalars.
"""

from __future__ import annotations

from keras import ops


def smooth_l1(diff, beta=1.0 / 9):
    """torch's ``smooth_l1_loss`` elementwise: ``0.5 x^2 / beta`` when ``|x| < beta``, else ``|x| - beta / 2``."""
    a = ops.abs(diff)
    return ops.where(a < beta, 0.5 * ops.square(a) / beta, a - 0.5 * beta)


def bce_with_logits(logits, targets):
    """torch's ``binary_cross_entropy_with_logits`` elementwise (the stable form)."""
    logits = ops.convert_to_tensor(logits, "float32")
    targets = ops.cast(targets, "float32")
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def _count(mask):
    return ops.maximum(ops.sum(ops.cast(mask, "float32")), 1.0)


def rpn_loss(objectness, deltas, labels, regression_targets, sampled_pos, sampled_neg):
    """``(objectness_loss, box_loss)`` over ``N`` anchors: ``objectness[N]`` logits, ``deltas[N, 4]``,
    ``labels[N]`` (1 object, 0 background), ``regression_targets[N, 4]``, sampled masks ``[N]``."""
    pos = ops.cast(sampled_pos, "float32")
    sampled = ops.cast(ops.logical_or(ops.cast(sampled_pos, "bool"), ops.cast(sampled_neg, "bool")), "float32")
    n = _count(sampled)
    obj = ops.sum(bce_with_logits(ops.reshape(objectness, (-1,)), ops.maximum(labels, 0)) * sampled) / n
    diff = ops.convert_to_tensor(deltas, "float32") - ops.convert_to_tensor(regression_targets, "float32")
    box = ops.sum(ops.sum(smooth_l1(diff), axis=-1) * pos) / n
    return obj, box


def box_head_loss(class_logits, box_regression, labels, regression_targets, sampled=None):
    """``(classification_loss, box_loss)``: ``class_logits[N, C]``, ``box_regression[N, 4C]``, int ``labels[N]``
    (0 background), ``regression_targets[N, 4]``, ``sampled[N]`` (default: every row)."""
    class_logits = ops.convert_to_tensor(class_logits, "float32")
    labels = ops.cast(ops.maximum(labels, 0), "int32")
    num_classes = class_logits.shape[1]
    weight = ops.ones_like(labels, "float32") if sampled is None else ops.cast(sampled, "float32")
    n = _count(weight)
    logp = ops.log_softmax(class_logits, axis=-1)
    ce = -ops.sum(logp * ops.one_hot(labels, num_classes), axis=-1)
    cls_loss = ops.sum(ce * weight) / n
    reg = ops.reshape(ops.convert_to_tensor(box_regression, "float32"), (-1, num_classes, 4))
    picked = ops.sum(reg * ops.one_hot(labels, num_classes)[:, :, None], axis=1)
    pos = weight * ops.cast(labels > 0, "float32")
    diff = picked - ops.convert_to_tensor(regression_targets, "float32")
    box_loss = ops.sum(ops.sum(smooth_l1(diff), axis=-1) * pos) / n
    return cls_loss, box_loss


def mask_loss(mask_logits, mask_targets, labels, positive):
    """Mask loss: ``mask_logits[N, M, M, C]`` (channels last), ``mask_targets[N, M, M]`` in [0, 1], the
    ground-truth class ``labels[N]`` and ``positive[N]`` (the rows that count)."""
    mask_logits = ops.convert_to_tensor(mask_logits, "float32")
    labels = ops.cast(ops.maximum(labels, 0), "int32")
    picked = ops.sum(mask_logits * ops.one_hot(labels, mask_logits.shape[-1])[:, None, None, :], axis=-1)
    pos = ops.cast(positive, "float32")
    m2 = float(mask_logits.shape[1] * mask_logits.shape[2])
    per_roi = ops.sum(bce_with_logits(picked, mask_targets), axis=(1, 2))
    return ops.sum(per_roi * pos) / (_count(pos) * m2)
