"""kseg.detection.masks against torchvision 0.29's paste_masks_in_image and project_masks_on_boxes (pinned:
sub-pixel and border-crossing boxes, M 28 and 14, padding 0, 1, 2) and by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.masks import mask_targets, paste_masks

REF = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "torchvision" / "masks.npz")


@pytest.mark.parametrize("m", [28, 14])
@pytest.mark.parametrize("padding", [1, 0, 2])
def test_paste_masks_equals_torchvision(m, padding):
    got = np.asarray(paste_masks(REF[f"probs_{m}"], REF[f"boxes_{m}"], 50, 60, padding=padding))
    expected = REF[f"pasted_{m}_{padding}"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (expected[0] > 0).sum() >= 1 and (expected > 0).any(axis=(1, 2)).mean() > 0.5  # the sub-pixel one too


def test_a_constant_mask_fills_its_integer_box_and_is_cut_at_the_border():
    masks = np.ones((2, 4, 4), np.float32)
    boxes = np.array([[2.0, 3.0, 6.0, 7.0], [-3.0, -3.0, 2.0, 1.0]], np.float32)
    got = np.asarray(paste_masks(masks, boxes, 10, 8, padding=0))
    expected = np.zeros((2, 10, 8), np.float32)
    expected[0, 3:8, 2:7] = 1.0  # x2, y2 inclusive (torchvision's TO_REMOVE = 1)
    expected[1, 0:2, 0:3] = 1.0
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_paste_masks_runs_in_a_tf_function():
    fn = tf.function(lambda p, b: paste_masks(p, b, 50, 60))
    got = fn(REF["probs_14"], REF["boxes_14"]).numpy()
    np.testing.assert_allclose(got, REF["pasted_14_1"], rtol=1e-5, atol=1e-5)


def test_mask_targets_equal_torchvision():
    got = np.asarray(mask_targets(REF["gt_masks"], REF["proposals"], REF["matched"], 14))
    assert got.shape == (20, 14, 14)
    np.testing.assert_allclose(got, REF["targets"], rtol=1e-5, atol=1e-5)


def test_mask_targets_take_boolean_masks():
    gt = np.zeros((1, 20, 20), bool)
    gt[0, 5:15, 5:15] = True
    got = np.asarray(mask_targets(gt, np.array([[5.0, 5.0, 15.0, 15.0]], np.float32), np.zeros(1, np.int32), 4))
    # the bins' samples lie inside the square except near its right and bottom edge (pixel 14.x blends 15)
    assert got.shape == (1, 4, 4) and got[0, :3, :3].min() == 1.0 and got[0, 3, 3] < 1.0
