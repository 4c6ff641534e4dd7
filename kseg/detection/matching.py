"""Matching anchors/proposals to ground truth and sampling them, as torchvision's Mask R-CNN does.

:class:`Matcher` is ``torchvision.models.detection._utils.Matcher`` on a ``[G, N]`` quality (IoU) matrix
with padded ground truth: each of the N predictions gets the index of its best ground truth when the
quality is ``>= high_threshold``, ``BELOW_LOW_THRESHOLD`` (-1) under ``low_threshold`` and
``BETWEEN_THRESHOLDS`` (-2) in between. With ``allow_low_quality_matches``, each ground truth's best
predictions (all ties) get their best match back even under the threshold (torchvision's
``set_low_quality_matches_``). On ties in a prediction's best quality the first ground truth wins.

Fixed shapes: ``gt_valid`` marks real ground-truth rows; padded rows never match, and with no valid row
every prediction is -1 (background), which torchvision handles in ``assign_targets_to_proposals`` and the
RPN's ``assign_targets_to_anchors``. A NaN quality (two empty boxes) counts as 0.

Crowd regions (COCO's ``iscrowd=1``, ``gt_crowd``): a crowd box is never a positive target. A prediction
whose best quality over all valid ground truth (crowd included) comes from a crowd box and is
``>= low_threshold`` is ignored (-2), neither positive nor negative, the way Detectron (v1) ignores anchors
in crowd regions (Detectron2's default data loading drops crowd annotations instead; torchvision's
references drop them too). The low-quality matches of the non-crowd ground truth are made after this, so
every non-crowd ground truth keeps its best prediction.

:func:`sample_balanced` is ``BalancedPositiveNegativeSampler`` for one image on fixed shapes: labels ``>= 1``
are positives, ``0`` negatives, ``< 0`` ignored; a uniformly random subset of ``min(#pos,
int(batch_size_per_image * positive_fraction))`` positives and of ``min(#neg, batch_size_per_image - that)``
negatives, returned as two boolean masks. The random subset comes from the ``top_k`` of uniform keys
(keras.random with the given seed generator), so the draws differ from torch's ``randperm`` but have the
same distribution.
"""

from __future__ import annotations

import keras
from keras import ops

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


class Matcher:
    """torchvision's Matcher; ``__call__(quality[G, N], gt_valid[G]=None, gt_crowd[G]=None) -> int32[N]``."""

    BELOW_LOW_THRESHOLD = BELOW_LOW_THRESHOLD
    BETWEEN_THRESHOLDS = BETWEEN_THRESHOLDS

    def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} should be <= high_threshold {high_threshold}")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, quality, gt_valid=None, gt_crowd=None):
        quality = ops.convert_to_tensor(quality, "float32")
        quality = ops.where(ops.isnan(quality), 0.0, quality)
        g = ops.shape(quality)[0]
        valid = ops.ones((g,), "bool") if gt_valid is None else ops.cast(gt_valid, "bool")
        crowd = ops.zeros((g,), "bool") if gt_crowd is None else ops.cast(gt_crowd, "bool")
        if isinstance(g, int) and g == 0:  # a static shape without ground truth: all background
            return ops.full((ops.shape(quality)[1],), BELOW_LOW_THRESHOLD, "int32")
        fill = -1.0  # below any IoU: a padded row is nobody's best match
        usable = ops.logical_and(valid, ops.logical_not(crowd))
        q = ops.where(usable[:, None], quality, fill)
        matched_vals = ops.max(q, axis=0)
        matches = ops.cast(ops.argmax(q, axis=0), "int32")
        all_matches = matches
        matches = ops.where(matched_vals < self.low_threshold, BELOW_LOW_THRESHOLD,
                            ops.where(matched_vals < self.high_threshold, BETWEEN_THRESHOLDS, matches))
        matches = self._ignore_crowd(matches, quality, valid, crowd)
        if self.allow_low_quality_matches:
            best_per_gt = ops.max(q, axis=1)
            is_best = ops.logical_and(q == best_per_gt[:, None], usable[:, None])
            matches = ops.where(ops.any(is_best, axis=0), all_matches, matches)
        # no usable ground truth at all: every prediction is background, whatever the crowd said
        any_valid = ops.any(valid)
        return ops.where(any_valid, matches, BELOW_LOW_THRESHOLD)

    def _ignore_crowd(self, matches, quality, valid, crowd):
        q_all = ops.where(valid[:, None], quality, -1.0)
        best = ops.argmax(q_all, axis=0)
        best_is_crowd = ops.take(crowd, best)
        ignore = ops.logical_and(best_is_crowd, ops.max(q_all, axis=0) >= self.low_threshold)
        return ops.where(ignore, BETWEEN_THRESHOLDS, matches)

    def get_config(self):
        return {"high_threshold": self.high_threshold, "low_threshold": self.low_threshold,
                "allow_low_quality_matches": self.allow_low_quality_matches}


def _sample_mask(candidates, num, k, seed_generator):
    """Boolean mask of ``num`` (a tensor <= k) uniformly chosen True entries of ``candidates``."""
    n = ops.shape(candidates)[0]
    keys = keras.random.uniform((n,), minval=0.0, maxval=1.0, seed=seed_generator)
    keys = ops.where(candidates, keys, -1.0)
    k = min(int(k), int(n)) if isinstance(n, int) else int(k)
    if k == 0:
        return ops.zeros((n,), "bool")
    _, idx = ops.top_k(keys, k=k)
    chosen = ops.arange(k) < num
    return ops.scatter(ops.expand_dims(idx, 1), ops.cast(chosen, "int32"), (n,)) > 0


def sample_balanced(labels, batch_size_per_image, positive_fraction, seed_generator=None):
    """``(sampled_positive[N], sampled_negative[N])`` boolean masks from ``labels[N]`` (>=1 pos, 0 neg, <0 ignore)."""
    labels = ops.convert_to_tensor(labels)
    positive = labels >= 1
    negative = labels == 0
    num_pos = ops.minimum(ops.sum(ops.cast(positive, "int32")), int(batch_size_per_image * positive_fraction))
    num_neg = ops.minimum(ops.sum(ops.cast(negative, "int32")), batch_size_per_image - num_pos)
    pos = _sample_mask(positive, num_pos, int(batch_size_per_image * positive_fraction), seed_generator)
    neg = _sample_mask(negative, num_neg, batch_size_per_image, seed_generator)
    return pos, neg
