"""Anchors as torchvision's ``AnchorGenerator`` makes them (Faster/Mask R-CNN's RPN).

Per level, the cell anchors for ``sizes`` x ``aspect_ratios`` (aspect ratio = height / width):
``h_ratios = sqrt(ar)``, ``w_ratios = 1 / h_ratios``, ``ws = w_ratios * size``, ``hs = h_ratios * size``
(ratios outer, sizes inner), ``stack([-ws, -hs, ws, hs]) / 2`` rounded half to even (``torch.round``).
They are shifted by ``arange(W) * stride_w`` and ``arange(H) * stride_h`` with
``stride = image_size // feature_size`` (integer division, per axis) and ordered ``(y, x, anchor)``:
anchor ``a`` at cell ``(i, j)`` is row ``(i * W + j) * A + a``. :func:`multilevel_anchors` concatenates
the levels in order, as ``AnchorGenerator.forward`` does for one image.

The values are computed in NumPy (they depend on shapes only) and come back as a float32 constant, so a
model with fixed input size holds them as a constant.
"""

from __future__ import annotations

import numpy as np
from keras import ops

#: maskrcnn_resnet50_fpn's anchor sizes (one per FPN level P2..P6) and aspect ratios (the same at each level)
MASKRCNN_SIZES = ((32,), (64,), (128,), (256,), (512,))
MASKRCNN_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def cell_anchors(sizes, aspect_ratios) -> np.ndarray:
    """``[len(aspect_ratios) * len(sizes), 4]`` zero-centred anchors (AnchorGenerator.generate_anchors)."""
    scales = np.asarray(sizes, np.float32)
    ratios = np.asarray(aspect_ratios, np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base = np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)
    return np.round(base).astype(np.float32)


def level_anchors_np(feature_h, feature_w, stride_h, stride_w, sizes, aspect_ratios) -> np.ndarray:
    """NumPy :func:`level_anchors`."""
    base = cell_anchors(sizes, aspect_ratios)
    shifts_x = np.arange(int(feature_w), dtype=np.int64) * int(stride_w)
    shifts_y = np.arange(int(feature_h), dtype=np.int64) * int(stride_h)
    shift_y, shift_x = np.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1).astype(np.float32)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def level_anchors(feature_h, feature_w, stride_h, stride_w, sizes, aspect_ratios):
    """``[feature_h * feature_w * A, 4]`` anchors of one level, ``A = len(sizes) * len(aspect_ratios)``."""
    return ops.convert_to_tensor(level_anchors_np(feature_h, feature_w, stride_h, stride_w, sizes, aspect_ratios))


def multilevel_anchors(image_hw, feature_hws, sizes_per_level=MASKRCNN_SIZES,
                       aspect_ratios=MASKRCNN_ASPECT_RATIOS):
    """All levels' anchors concatenated, for an input of ``image_hw`` and feature maps of ``feature_hws``.

    ``aspect_ratios``: one tuple used at every level, or one tuple per level (as AnchorGenerator takes).
    """
    if len(sizes_per_level) != len(feature_hws):
        raise ValueError(f"{len(feature_hws)} feature maps but {len(sizes_per_level)} anchor size tuples")
    if not isinstance(aspect_ratios[0], (list, tuple)):
        aspect_ratios = (aspect_ratios,) * len(feature_hws)
    image_h, image_w = (int(v) for v in image_hw)
    levels = [level_anchors_np(fh, fw, image_h // int(fh), image_w // int(fw), sizes, ratios)
              for (fh, fw), sizes, ratios in zip(feature_hws, sizes_per_level, aspect_ratios)]
    return ops.convert_to_tensor(np.concatenate(levels, axis=0))
