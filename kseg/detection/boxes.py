"""Box arithmetic as torchvision does it: areas, pairwise IoU, clipping, small-box masks, the R-CNN box coder.

Boxes are ``(x1, y1, x2, y2)`` float32 pixels; the area is ``(x2 - x1) * (y2 - y1)`` (no ``+ 1``).

- :func:`box_area`, :func:`box_iou` are ``torchvision.ops.box_area`` / ``box_iou``: the IoU is
  ``inter / union`` with nothing added, so two empty boxes give NaN there and here (torchvision's detection
  models never pass empty boxes: ground truth with an empty box is refused, proposals under 1e-3 px are
  removed).
- :func:`clip_boxes` is ``torchvision.ops.clip_boxes_to_image``: x into ``[0, width]``, y into ``[0, height]``.
- :func:`small_box_mask` is ``torchvision.ops.remove_small_boxes`` as a validity mask (fixed shapes): True
  where ``w >= min_size`` and ``h >= min_size``.
- :class:`BoxCoder` is ``torchvision.models.detection._utils.BoxCoder``: ``encode`` is ``encode_single``
  (deltas of the matched ground truth against the proposals), ``decode`` is ``decode_single`` (``[N, 4K]``
  deltas on ``[N, 4]`` boxes give ``[N, 4K]`` boxes, as ``decode_single`` does; torchvision's ``decode``
  then reshapes them to ``[N, K, 4]``). ``dw``/``dh`` are clamped above at ``bbox_xform_clip`` before the
  exponential, so a large delta cannot overflow.
"""

from __future__ import annotations

import math

import keras
from keras import ops

DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)


def box_area(boxes):
    """``[..., 4]`` boxes -> ``[...]`` areas ``(x2 - x1) * (y2 - y1)``."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1, boxes2):
    """``[N, 4]`` and ``[M, 4]`` boxes -> ``[N, M]`` IoU, ``torchvision.ops.box_iou``'s arithmetic."""
    boxes1 = ops.convert_to_tensor(boxes1, "float32")
    boxes2 = ops.convert_to_tensor(boxes2, "float32")
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = ops.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = ops.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = ops.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def clip_boxes(boxes, height, width):
    """Clip ``[..., 4]`` boxes into an image of ``height`` x ``width`` (torchvision's clip_boxes_to_image)."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    height = ops.cast(height, "float32")
    width = ops.cast(width, "float32")
    x = ops.minimum(ops.maximum(boxes[..., 0::2], 0.0), width)
    y = ops.minimum(ops.maximum(boxes[..., 1::2], 0.0), height)
    return ops.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def small_box_mask(boxes, min_size):
    """True for ``[..., 4]`` boxes whose width and height are both ``>= min_size`` (remove_small_boxes' keep)."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    ws = boxes[..., 2] - boxes[..., 0]
    hs = boxes[..., 3] - boxes[..., 1]
    return ops.logical_and(ws >= min_size, hs >= min_size)


@keras.saving.register_keras_serializable(package="kseg")
class BoxCoder:
    """R-CNN box deltas ``(dx, dy, dw, dh)`` scaled by ``weights`` (torchvision's BoxCoder, one image).

    ``weights``: ``(wx, wy, ww, wh)``; torchvision's RPN uses ``(1, 1, 1, 1)``, its box head
    ``(10, 10, 5, 5)``. ``bbox_xform_clip``: the largest ``dw``/``dh`` decoded (default ``log(1000 / 16)``).
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=DEFAULT_XFORM_CLIP):
        self.weights = tuple(float(w) for w in weights)
        if len(self.weights) != 4:
            raise ValueError(f"BoxCoder weights need 4 values (wx, wy, ww, wh), got {weights!r}")
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, matched_gt, proposals):
        """``[N, 4]`` ground-truth boxes matched to ``[N, 4]`` proposals -> ``[N, 4]`` regression targets."""
        gt = ops.convert_to_tensor(matched_gt, "float32")
        pr = ops.convert_to_tensor(proposals, "float32")
        wx, wy, ww, wh = self.weights
        ex_w, ex_h = pr[:, 2] - pr[:, 0], pr[:, 3] - pr[:, 1]
        ex_cx, ex_cy = pr[:, 0] + 0.5 * ex_w, pr[:, 1] + 0.5 * ex_h
        gt_w, gt_h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
        gt_cx, gt_cy = gt[:, 0] + 0.5 * gt_w, gt[:, 1] + 0.5 * gt_h
        return ops.stack([wx * (gt_cx - ex_cx) / ex_w, wy * (gt_cy - ex_cy) / ex_h,
                          ww * ops.log(gt_w / ex_w), wh * ops.log(gt_h / ex_h)], axis=1)

    def decode(self, deltas, boxes):
        """``[N, 4K]`` deltas applied to ``[N, 4]`` boxes -> ``[N, 4K]`` boxes (decode_single's layout)."""
        deltas = ops.convert_to_tensor(deltas, "float32")
        boxes = ops.convert_to_tensor(boxes, "float32")
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ctr_x, ctr_y = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = ops.minimum(deltas[:, 2::4] / ww, self.bbox_xform_clip)
        dh = ops.minimum(deltas[:, 3::4] / wh, self.bbox_xform_clip)
        pred_cx = dx * widths[:, None] + ctr_x[:, None]
        pred_cy = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (ops.exp(dw) * widths[:, None])
        half_h = 0.5 * (ops.exp(dh) * heights[:, None])
        out = ops.stack([pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], axis=2)
        return ops.reshape(out, (-1, ops.shape(deltas)[1]))

    def get_config(self):
        return {"weights": list(self.weights), "bbox_xform_clip": self.bbox_xform_clip}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
