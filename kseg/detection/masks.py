"""Mask R-CNN's masks: pasting ``M x M`` mask probabilities into the image, and the ``M x M`` mask targets.

:func:`paste_masks` equals torchvision's ``paste_masks_in_image`` (``roi_heads.py``) with fixed shapes:
each mask is padded by ``padding`` zeros per side (``M + 2p`` square) and its box widened about its centre
by ``(M + 2p) / M``; the widened box is cast to integers toward zero (torch's ``.to(int64)``), giving
``x1, y1, x2, y2``; the padded mask is resized to ``max(y2 - y1 + 1, 1) x max(x2 - x1 + 1, 1)`` pixels by
bilinear interpolation with ``align_corners=False`` (torch's ``F.interpolate``: source
``max((d + 0.5) * in / out - 0.5, 0)``, neighbours clamped at the last pixel) and written at ``(y1, x1)``,
cut at the image border; pixels outside it are 0. Here the resize and the placement are one separable
linear map per box, ``rows[H, M+2p] @ mask @ cols[W, M+2p]^T``, so the output is ``[K, H, W]`` for any boxes
and the values equal torchvision's up to float rounding.

:func:`mask_targets` equals torchvision's ``project_masks_on_boxes``: each proposal's matched ground-truth
mask, RoI-aligned into ``M x M`` (``roi_align`` at scale 1, adaptive sampling, ``aligned=False``; see
:mod:`kseg.detection.roi_align` for the adaptive grid's cap).
"""

from __future__ import annotations

from keras import ops

from kseg.detection.roi_align import roi_align


def _expanded_int_boxes(boxes, scale):
    boxes = ops.convert_to_tensor(boxes, "float32")
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    exp = ops.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)
    return ops.cast(ops.trunc(exp), "int32")


def _paste_weights(lo_box, hi_box, size, m):
    """``[K, size, m]``: the bilinear weights mapping ``m`` mask pixels onto ``size`` image pixels per box."""
    out_len = ops.maximum(hi_box - lo_box + 1, 1)
    pix = ops.arange(size, dtype="int32")
    d = pix[None, :] - lo_box[:, None]
    inside = ops.logical_and(pix[None, :] >= lo_box[:, None], pix[None, :] <= hi_box[:, None])
    ratio = float(m) / ops.cast(out_len, "float32")
    src = ops.maximum(ratio[:, None] * (ops.cast(d, "float32") + 0.5) - 0.5, 0.0)
    src = ops.where(ops.equal(out_len, m)[:, None], ops.cast(d, "float32"), src)
    lo = ops.minimum(ops.floor(src), float(m - 1))
    hi = ops.where(lo < m - 1, lo + 1.0, lo)
    lam = ops.clip(src - lo, 0.0, 1.0)
    lo_hot = ops.one_hot(ops.cast(lo, "int32"), m)
    hi_hot = ops.one_hot(ops.cast(hi, "int32"), m)
    w = (1.0 - lam)[..., None] * lo_hot + lam[..., None] * hi_hot
    return w * ops.cast(inside, "float32")[..., None]


def paste_masks(masks, boxes, height, width, padding=1):
    """``[K, height, width]`` image-sized masks from ``[K, M, M]`` mask probabilities and their ``[K, 4]`` boxes
    (``height`` and ``width`` may be scalar tensors of a graph)."""
    masks = ops.convert_to_tensor(masks, "float32")
    m = masks.shape[-1]
    padded = ops.pad(masks, ((0, 0), (padding, padding), (padding, padding)))
    mp = m + 2 * padding
    scale = float(mp) / float(m)
    b = _expanded_int_boxes(boxes, scale)
    rows = _paste_weights(b[:, 1], b[:, 3], height if ops.is_tensor(height) else int(height), mp)
    cols = _paste_weights(b[:, 0], b[:, 2], width if ops.is_tensor(width) else int(width), mp)
    t = ops.einsum("khr,krc->khc", rows, padded)
    return ops.einsum("khc,kwc->khw", t, cols)


def mask_targets(gt_masks, proposals, matched_idx, M, max_adaptive_grid=8):
    """``[K, M, M]`` targets: ``gt_masks[G, H, W]`` RoI-aligned in ``proposals[K, 4]`` (``gt = matched_idx[K]``)."""
    gt = ops.cast(ops.convert_to_tensor(gt_masks), "float32")[..., None]
    out = roi_align(gt, proposals, matched_idx, (M, M), spatial_scale=1.0, sampling_ratio=-1, aligned=False,
                    max_adaptive_grid=max_adaptive_grid)
    return out[..., 0]
