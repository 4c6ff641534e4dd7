"""Non-maximum suppression with fixed-size outputs, equal to ``torchvision.ops.nms`` / ``batched_nms``.

:func:`nms` is torchvision's greedy NMS: boxes are visited by descending score; a box is kept unless a kept
box has IoU ``>`` ``iou_threshold`` with it (strictly greater); the IoU is torchvision's
``inter / (area_i + area_j - inter)``, so a pair with an empty box (NaN or 0) never suppresses. The kept
indices (into the input, int32) come in descending score order, at most ``max_output`` of them, padded
with 0 and a False in the returned validity mask. Equal scores: the lower input index comes first (a
stable descending sort, which torchvision's CPU kernel also uses); the tests pin it against torchvision.
``valid`` (optional boolean ``[N]``) marks padded boxes, which are never kept and never suppress.

:func:`batched_nms` is torchvision's coordinate trick: every box is shifted by
``idxs * (max_coordinate + 1)`` (``max_coordinate`` over the valid boxes) so that boxes of different
categories cannot overlap, then :func:`nms` runs once. torchvision switches to a per-class loop above 4000
boxes on CPU; that gives the same kept set up to float rounding of the shifted coordinates.

The implementation is keras.ops only: one ``while_loop`` step per kept box (it stops early when no box is
left), each step an ``O(N)`` IoU row, no ``N x N`` matrix; it compiles with XLA (Keras' default
``jit_compile="auto"`` on TensorFlow), where it runs within about 2x of TensorFlow's kernel, and it is the
same on every Keras backend, so :func:`nms` does not dispatch. :func:`nms_tf` is the same through
``tf.image.non_max_suppression`` (TensorFlow's CPU kernel sorts by score the same way, computes the same IoU
and suppresses on ``IoU > threshold``; the tests pin it to torchvision's output too; but it orders each
box's corners itself, so a box with ``x2 < x1`` counts as flipped where torchvision sees a negative area,
and its GPU kernel is not checked here).
"""

from __future__ import annotations

from keras import ops


def _sorted_inputs(boxes, scores, valid):
    boxes = ops.convert_to_tensor(boxes, "float32")
    scores = ops.convert_to_tensor(scores, "float32")
    n = ops.shape(scores)[0]
    _, order = ops.top_k(scores, k=n)  # descending; equal scores keep the lower index first
    valid = ops.ones((n,), "bool") if valid is None else ops.cast(valid, "bool")
    return ops.take(boxes, order, axis=0), ops.take(valid, order), ops.cast(order, "int32")


def nms(boxes, scores, iou_threshold, max_output, valid=None):
    """``(indices int32[max_output], valid bool[max_output])``: torchvision's nms, padded with 0 / False."""
    sboxes, active, order = _sorted_inputs(boxes, scores, valid)
    n = ops.shape(order)[0]
    areas = (sboxes[:, 2] - sboxes[:, 0]) * (sboxes[:, 3] - sboxes[:, 1])
    positions = ops.arange(n, dtype="int32")
    slots = ops.arange(max_output, dtype="int32")
    thr = float(iou_threshold)

    def cond(i, active, keep, kept):
        return ops.logical_and(i < max_output, ops.any(active))

    def body(i, active, keep, kept):
        cand = ops.cast(ops.argmax(ops.cast(active, "int32")), "int32")
        box = ops.take(sboxes, cand, axis=0)
        lt = ops.maximum(sboxes[:, :2], box[:2])
        rb = ops.minimum(sboxes[:, 2:], box[2:])
        wh = ops.maximum(rb - lt, 0.0)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (ops.take(areas, cand) + areas - inter)
        active = ops.logical_and(active, ops.logical_not(iou > thr))
        active = ops.logical_and(active, positions != cand)
        keep = ops.where(slots == i, ops.take(order, cand), keep)
        kept = ops.logical_or(kept, slots == i)
        return i + 1, active, keep, kept

    init = (ops.convert_to_tensor(0, "int32"), active, ops.zeros((max_output,), "int32"),
            ops.zeros((max_output,), "bool"))
    _, _, keep, kept = ops.while_loop(cond, body, init)
    return keep, kept


def _offset_boxes(boxes, idxs, valid):
    boxes = ops.convert_to_tensor(boxes, "float32")
    n = ops.shape(boxes)[0]
    valid = ops.ones((n,), "bool") if valid is None else ops.cast(valid, "bool")
    max_coordinate = ops.max(ops.where(valid[:, None], boxes, float("-inf")))
    max_coordinate = ops.where(ops.any(valid), max_coordinate, 0.0)
    offsets = ops.cast(idxs, "float32") * (max_coordinate + 1.0)
    return boxes + offsets[:, None], valid


def batched_nms(boxes, scores, idxs, iou_threshold, max_output, valid=None):
    """torchvision's batched_nms (per-category NMS through the coordinate offset), fixed-size as :func:`nms`."""
    shifted, valid = _offset_boxes(boxes, idxs, valid)
    return nms(shifted, scores, iou_threshold, max_output, valid)


def nms_tf(boxes, scores, iou_threshold, max_output, valid=None):
    """:func:`nms` through TensorFlow's ``non_max_suppression`` kernel (TensorFlow backend only)."""
    import tensorflow as tf

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if valid is not None:
        scores = tf.where(tf.cast(valid, tf.bool), scores, float("-inf"))
    yxyx = tf.gather(boxes, [1, 0, 3, 2], axis=1)
    keep = tf.image.non_max_suppression(yxyx, scores, max_output, iou_threshold)
    count = tf.shape(keep)[0]
    keep = tf.pad(keep, [[0, max_output - count]])
    return keep, tf.range(max_output) < count
