"""RoI Align equal to ``torchvision.ops.roi_align``, and torchvision's ``MultiScaleRoIAlign``, channels last.

:func:`roi_align` takes NHWC features (torchvision: NCHW) and returns ``[K, out_h, out_w, C]``. Per RoI
(box times ``spatial_scale``, minus 0.5 when ``aligned``), the box is split into ``out_h x out_w`` bins;
each bin averages a ``grid_h x grid_w`` grid of bilinear samples at
``y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h`` (same for x). torchvision's border rules: a sample
with ``y < -1`` or ``y > H`` (or x likewise) is 0; otherwise y is raised to 0 when below and, at or past
``H - 1``, both neighbours are row ``H - 1``. Without ``aligned`` the RoI's width and height are at least 1.
The average divides by ``max(grid_h * grid_w, 1)``.

``sampling_ratio > 0`` fixes the grid at ``sampling_ratio x sampling_ratio``. ``sampling_ratio <= 0`` is
torchvision's adaptive grid, ``ceil(roi_h / out_h) x ceil(roi_w / out_w)`` per RoI; here the grid tensor is
``max_adaptive_grid`` per side (default 8) with the samples past the RoI's own grid masked out, so the
result is exact for RoIs up to ``8 * out`` feature pixels per side; a larger RoI averages an evenly spread
``max_adaptive_grid``-sided grid over each bin instead (a deliberate difference: memory and time grow with
the square of the grid).

:func:`multiscale_roi_align` is ``MultiScaleRoIAlign(['0', '1', '2', '3'], output_size, sampling_ratio)``:
each level's scale is ``2 ** round(log2(feature_h / image_h))`` (torchvision's
``_infer_scale``; ``image_hw`` is the resized image's size before padding, the largest in the batch, as
torchvision takes it), and each box goes to level
``floor(4 + log2(sqrt(area) / 224) + 1e-6)`` clamped to the levels present (``LevelMapper`` with
``k_min``/``k_max`` from the first and last scale, canonical scale 224, level 4). On TensorFlow with a fixed
grid each box is pooled on its own level only (``tf.dynamic_partition``); otherwise every level is pooled
for every box and the box's own level is selected, which keeps shapes fixed.

On TensorFlow a fixed grid (``sampling_ratio > 0``, what Mask R-CNN's heads use) runs through
``tf.image.crop_and_resize`` on features padded by one edge-replicated pixel per side, which gives
torchvision's border rules exactly (:func:`_roi_align_tf`); it has no XLA kernel, so a model using it is
compiled without XLA. :func:`roi_align_ops` is the keras.ops version (any backend, XLA, the adaptive grid).
"""

from __future__ import annotations

import math

import keras
from keras import ops


def _output_hw(output_size):
    if isinstance(output_size, int):
        return output_size, output_size
    return int(output_size[0]), int(output_size[1])


def _axis_samples(start, length, bins, grid, max_grid, size):
    """Per RoI, bin and grid step along one axis: low/high indices, their weights (masked), the grid used.

    ``start``/``length``: ``[K]``; ``grid``: ``[K]`` float samples per bin; returns tensors ``[K, bins, G]``.
    """
    size_f = ops.cast(size, "float32")
    bin_size = length / bins
    steps = ops.arange(max_grid, dtype="float32")
    bins_i = ops.arange(bins, dtype="float32")
    safe_grid = ops.maximum(grid, 1.0)  # an empty aligned RoI has no samples (grid 0)
    pos = (start[:, None, None] + bins_i[None, :, None] * bin_size[:, None, None]
           + (steps[None, None, :] + 0.5) * bin_size[:, None, None] / safe_grid[:, None, None])
    inside = ops.logical_and(pos >= -1.0, pos <= size_f)
    inside = ops.logical_and(inside, steps[None, None, :] < grid[:, None, None])
    pos = ops.where(inside, pos, 0.0)
    pos = ops.maximum(pos, 0.0)
    low = ops.floor(pos)
    at_end = low >= size_f - 1.0
    low = ops.where(at_end, size_f - 1.0, low)
    high = ops.where(at_end, size_f - 1.0, low + 1.0)
    pos = ops.where(at_end, low, pos)
    frac = pos - low
    mask = ops.cast(inside, "float32")
    return (ops.cast(low, "int32"), ops.cast(high, "int32"), (1.0 - frac) * mask, frac * mask)


def roi_align(features, boxes, batch_index, output_size, spatial_scale=1.0, sampling_ratio=-1,
              aligned=False, max_adaptive_grid=8):
    """``[K, out_h, out_w, C]`` RoI Align of NHWC ``features`` for ``[K, 4]`` boxes in image ``batch_index[K]``."""
    features = ops.convert_to_tensor(features)
    boxes = ops.convert_to_tensor(boxes, "float32")
    out_h, out_w = _output_hw(output_size)
    if sampling_ratio > 0 and keras.backend.backend() == "tensorflow":
        return _roi_align_tf(features, boxes, batch_index, (out_h, out_w), spatial_scale, int(sampling_ratio),
                             aligned)
    return roi_align_ops(features, boxes, batch_index, (out_h, out_w), spatial_scale, sampling_ratio, aligned,
                         max_adaptive_grid)


def roi_align_ops(features, boxes, batch_index, output_size, spatial_scale=1.0, sampling_ratio=-1,
                  aligned=False, max_adaptive_grid=8):
    """:func:`roi_align` in keras.ops gathers (any backend; the adaptive grid)."""
    features = ops.convert_to_tensor(features)
    boxes = ops.convert_to_tensor(boxes, "float32")
    out_h, out_w = _output_hw(output_size)
    height, width, channels = ops.shape(features)[1], ops.shape(features)[2], features.shape[3]
    offset = 0.5 if aligned else 0.0
    roi = boxes * float(spatial_scale) - offset
    roi_w, roi_h = roi[:, 2] - roi[:, 0], roi[:, 3] - roi[:, 1]
    if not aligned:
        roi_w, roi_h = ops.maximum(roi_w, 1.0), ops.maximum(roi_h, 1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = ops.full(ops.shape(roi_h), float(sampling_ratio))
        g_h = g_w = int(sampling_ratio)
    else:
        grid_h = ops.minimum(ops.ceil(roi_h / out_h), float(max_adaptive_grid))
        grid_w = ops.minimum(ops.ceil(roi_w / out_w), float(max_adaptive_grid))
        g_h = g_w = int(max_adaptive_grid)
    y_lo, y_hi, wy_lo, wy_hi = _axis_samples(roi[:, 1], roi_h, out_h, grid_h, g_h, height)
    x_lo, x_hi, wx_lo, wx_hi = _axis_samples(roi[:, 0], roi_w, out_w, grid_w, g_w, width)
    flat = ops.reshape(features, (-1, channels))
    base = ops.cast(batch_index, "int32")[:, None, None, None, None] * (height * width)
    total = 0.0
    for rows, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for cols, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            idx = base + rows[:, :, :, None, None] * width + cols[:, None, None, :, :]
            weight = wy[:, :, :, None, None] * wx[:, None, None, :, :]
            total = total + ops.take(flat, idx, axis=0) * ops.cast(weight[..., None], flat.dtype)
    count = ops.maximum(grid_h * grid_w, 1.0)
    pooled = ops.sum(total, axis=(2, 4)) / ops.cast(count[:, None, None, None], flat.dtype)
    return pooled


def _roi_align_tf(features, boxes, batch_index, output_hw, spatial_scale, grid, aligned):
    """:func:`roi_align` with a fixed grid through ``tf.image.crop_and_resize``: the bin samples form one regular
    grid of ``out * grid`` points per axis, sampled from the features padded by one edge-replicated pixel per side
    (so samples in [-1, 0] and [H - 1, H] take the edge, as torchvision clamps them, and samples beyond are the
    extrapolation value 0), then averaged over ``grid x grid`` windows."""
    import tensorflow as tf

    out_h, out_w = output_hw
    padded = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    height = tf.cast(tf.shape(features)[1], tf.float32)
    width = tf.cast(tf.shape(features)[2], tf.float32)
    roi = boxes * float(spatial_scale) - (0.5 if aligned else 0.0)
    roi_w, roi_h = roi[:, 2] - roi[:, 0], roi[:, 3] - roi[:, 1]
    if not aligned:
        roi_w, roi_h = tf.maximum(roi_w, 1.0), tf.maximum(roi_h, 1.0)
    step_y, step_x = roi_h / (out_h * grid), roi_w / (out_w * grid)
    y0, x0 = roi[:, 1] + 0.5 * step_y + 1.0, roi[:, 0] + 0.5 * step_x + 1.0  # +1: the padding
    y1 = y0 + (out_h * grid - 1) * step_y
    x1 = x0 + (out_w * grid - 1) * step_x
    norm = tf.stack([y0 / (height + 1.0), x0 / (width + 1.0), y1 / (height + 1.0), x1 / (width + 1.0)], axis=1)
    crops = tf.image.crop_and_resize(padded, norm, tf.cast(batch_index, tf.int32), (out_h * grid, out_w * grid),
                                     extrapolation_value=0.0)
    return tf.nn.avg_pool2d(crops, grid, grid, "VALID")


def infer_scale(feature_size, image_size) -> float:
    """torchvision's ``MultiScaleRoIAlign._infer_scale``: ``2 ** round(log2(feature / image))``."""
    return 2.0 ** float(round(math.log2(float(feature_size) / float(image_size))))


def roi_levels(boxes, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
    """torchvision's ``LevelMapper``: ``[K]`` int32 level index from 0 (``k_min``) to ``k_max - k_min``."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    s = ops.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    target = ops.floor(canonical_level + ops.log2(s / canonical_scale) + eps)
    target = ops.clip(ops.where(ops.isnan(target), float(k_min), target), float(k_min), float(k_max))
    return ops.cast(target, "int32") - int(k_min)


def multiscale_roi_align(features_list, boxes, batch_index, output_size, sampling_ratio, image_hw=None,
                         canonical_scale=224, canonical_level=4, scales=None):
    """``[K, out_h, out_w, C]``: torchvision's MultiScaleRoIAlign over NHWC ``features_list`` (finest first).

    ``scales`` (feature size / image size per level) are inferred from static shapes and ``image_hw`` as
    torchvision does, unless given (a pyramid of unknown size: an FPN's are 1/4, 1/8, 1/16, 1/32)."""
    if scales is None:
        scales = [infer_scale(f.shape[1], image_hw[0]) for f in features_list]
    k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
    if len(features_list) == 1:
        return roi_align(features_list[0], boxes, batch_index, output_size, scales[0], sampling_ratio)
    levels = roi_levels(boxes, k_min, k_max, canonical_scale, canonical_level)
    if sampling_ratio > 0 and keras.backend.backend() == "tensorflow":
        return _multiscale_tf(features_list, boxes, batch_index, output_size, sampling_ratio, scales, levels)
    out = None
    for i, (feats, scale) in enumerate(zip(features_list, scales)):
        pooled = roi_align(feats, boxes, batch_index, output_size, scale, sampling_ratio)
        here = ops.cast(levels == i, pooled.dtype)[:, None, None, None]
        out = pooled * here if out is None else out + pooled * here
    return out


def _multiscale_tf(features_list, boxes, batch_index, output_size, sampling_ratio, scales, levels):
    """Each box pooled on its own level only (``tf.dynamic_partition`` / ``dynamic_stitch``)."""
    import tensorflow as tf

    n = len(features_list)
    positions = tf.dynamic_partition(tf.range(tf.shape(boxes)[0]), levels, n)
    part_boxes = tf.dynamic_partition(boxes, levels, n)
    part_index = tf.dynamic_partition(tf.cast(batch_index, tf.int32), levels, n)
    pooled = [roi_align(f, b, i, output_size, s, sampling_ratio)
              for f, b, i, s in zip(features_list, part_boxes, part_index, scales)]
    return tf.dynamic_stitch(positions, pooled)
