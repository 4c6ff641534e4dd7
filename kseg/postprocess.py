"""Post-processing of predicted label maps, as the segmentation texts teach it.

Plain NumPy functions on one (H, W) map of class ids (OpenCV does the work), so
evaluation and prediction share them:

- :func:`opening`  per class, a morphological opening (erode then dilate) of the
  class's mask removes specks and thin spurs; the pixels it takes away get the
  label of the nearest pixel that kept its label.
- :func:`closing`  per class, a morphological closing (dilate then erode) fills
  small gaps and notches in the class's mask; a pixel that two classes' closings
  both claim keeps its label.
- :func:`remove_small_regions`  per class, connected regions (8-connectivity)
  smaller than N pixels are removed and filled from the nearest remaining pixels.
- :func:`postprocess`  the three in that order, as one call with options.

``classes`` restricts each step to some class ids (default: all). Kernels are
elliptical, ``kernel`` pixels wide (odd, >= 3). Pixels with ids outside [0, C)
(unknown) are left alone.
"""

from __future__ import annotations

import cv2
import numpy as np

from kseg.errors import KsegError


def _classes(label_map, classes, num_classes=None):
    if classes is not None:
        return [int(c) for c in classes]
    lab = np.asarray(label_map)
    ids = np.unique(lab)
    ids = ids[ids >= 0]
    if num_classes is not None:
        ids = ids[ids < num_classes]
    return [int(c) for c in ids]


def _kernel(size: int):
    size = int(size)
    if size < 3 or size % 2 == 0:
        raise KsegError(f"bad kernel size {size}: give an odd number of pixels, 3 or more")
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def fill_from_nearest(label_map, holes) -> np.ndarray:
    """``label_map`` with every pixel of the boolean mask ``holes`` given the label of the
    nearest pixel outside it (Euclidean distance). Returns the map unchanged if
    ``holes`` covers nothing or everything."""
    lab = np.asarray(label_map)
    holes = np.asarray(holes, bool)
    if not holes.any() or holes.all():
        return lab.copy()
    # each non-hole pixel (a zero of the source) gets its own label, numbered in
    # row-major order from 1; each hole pixel gets the label of its nearest one
    _, nearest = cv2.distanceTransformWithLabels(holes.astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    sources = np.flatnonzero(~holes.ravel())
    out = lab.ravel().copy()
    flat_holes = np.flatnonzero(holes.ravel())
    out[flat_holes] = out[sources[nearest.ravel()[flat_holes] - 1]]
    return out.reshape(lab.shape)


def opening(label_map, kernel: int = 3, classes=None) -> np.ndarray:
    """Per-class morphological opening; removed pixels are filled from the nearest kept ones."""
    lab = np.asarray(label_map)
    k = _kernel(kernel)
    holes = np.zeros(lab.shape, bool)
    for c in _classes(lab, classes):
        mask = (lab == c).astype(np.uint8)
        if not mask.any():
            continue
        kept = cv2.morphologyEx(mask, cv2.MORPH_OPEN, k, borderType=cv2.BORDER_REPLICATE).astype(bool)
        holes |= mask.astype(bool) & ~kept
    return fill_from_nearest(lab, holes)


def closing(label_map, kernel: int = 3, classes=None) -> np.ndarray:
    """Per-class morphological closing; a pixel claimed by two classes keeps its label."""
    lab = np.asarray(label_map)
    k = _kernel(kernel)
    claims = np.zeros(lab.shape, np.int32)
    claimant = np.full(lab.shape, -1, np.int64)
    for c in _classes(lab, classes):
        mask = (lab == c).astype(np.uint8)
        if not mask.any():
            continue
        closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k, borderType=cv2.BORDER_REPLICATE).astype(bool)
        added = closed & ~mask.astype(bool) & (lab >= 0)
        claims += added
        claimant[added] = c
    out = lab.copy()
    take = claims == 1
    out[take] = claimant[take]
    return out


def remove_small_regions(label_map, min_size, classes=None) -> np.ndarray:
    """Remove connected regions (8-connectivity) smaller than ``min_size`` pixels, per class,
    filling them from the nearest remaining pixels. ``min_size`` is one number or a
    ``{class_id: pixels}`` dict (classes not in it are left alone)."""
    lab = np.asarray(label_map)
    sizes = min_size if isinstance(min_size, dict) else {c: min_size for c in _classes(lab, classes)}
    if classes is not None:
        sizes = {c: v for c, v in sizes.items() if c in set(int(k) for k in classes)}
    holes = np.zeros(lab.shape, bool)
    for c, n in sizes.items():
        n = int(n)
        if n <= 1:
            continue
        mask = (lab == int(c)).astype(np.uint8)
        if not mask.any():
            continue
        count, regions, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < n)
        small = small[small > 0]  # 0 is the background of this class's mask
        if small.size:
            holes |= np.isin(regions, small)
    return fill_from_nearest(lab, holes)


def postprocess(label_map, opening_kernel: int = 0, closing_kernel: int = 0, min_size=0,
                classes=None) -> np.ndarray:
    """Opening, then closing, then small-region removal of one label map (0 = skip a step)."""
    lab = np.asarray(label_map)
    if opening_kernel:
        lab = opening(lab, opening_kernel, classes)
    if closing_kernel:
        lab = closing(lab, closing_kernel, classes)
    if min_size:
        lab = remove_small_regions(lab, min_size, classes)
    return lab


def postprocess_batch(label_maps, **options) -> np.ndarray:
    """:func:`postprocess` applied to each map of an (N, H, W) batch."""
    return np.stack([postprocess(m, **options) for m in np.asarray(label_maps)])
