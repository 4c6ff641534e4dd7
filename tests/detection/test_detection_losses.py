"""kseg.detection.losses against torchvision 0.29's RPN compute_loss, fastrcnn_loss and maskrcnn_loss (pinned)
and on cases computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from kseg.detection.losses import bce_with_logits, box_head_loss, mask_loss, rpn_loss, smooth_l1
from kseg.detection.masks import mask_targets

REF = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "torchvision" / "losses.npz")


def test_rpn_loss_equals_torchvision():
    obj, box = rpn_loss(REF["objectness"], REF["deltas"], REF["rpn_labels"], REF["rpn_targets"], REF["pos"],
                        REF["neg"])
    np.testing.assert_allclose(float(obj), REF["rpn_obj"], rtol=1e-5)
    np.testing.assert_allclose(float(box), REF["rpn_box"], rtol=1e-5)


def test_box_head_loss_equals_torchvision():
    cls, box = box_head_loss(REF["class_logits"], REF["box_regression"], REF["class_labels"], REF["rpn_targets"])
    np.testing.assert_allclose(float(cls), REF["cls_loss"], rtol=1e-5)
    np.testing.assert_allclose(float(box), REF["box_loss"], rtol=1e-5)


def test_mask_loss_with_mask_targets_equals_torchvision():
    targets = mask_targets(REF["mask_gt"], REF["mask_proposals"], REF["mask_matched"], 14)
    labels = REF["mask_gt_labels"][REF["mask_matched"]]
    got = mask_loss(REF["mask_logits"], targets, labels, np.ones(len(labels), bool))
    np.testing.assert_allclose(float(got), REF["mask_loss"], rtol=1e-5)


def test_smooth_l1_and_bce_by_hand():
    beta = 1 / 9
    np.testing.assert_allclose(np.asarray(smooth_l1(np.array([0.05, -0.2, 1.0], np.float32))),
                               [0.5 * 0.05 ** 2 / beta, 0.2 - beta / 2, 1 - beta / 2], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bce_with_logits(np.array([0.0, 2.0, -100.0]), np.array([1.0, 0.0, 0.0]))),
                               [math.log(2), 2 + math.log1p(math.exp(-2)), 0.0], rtol=1e-6, atol=1e-7)


def test_rpn_loss_by_hand_counts_only_sampled_anchors():
    objectness = np.array([0.0, 2.0, -1.0, 5.0], np.float32)
    labels = np.array([1, 0, 0, -1], np.float32)
    deltas = np.array([[0.5, 0, 0, 0], [9, 9, 9, 9], [9, 9, 9, 9], [9, 9, 9, 9]], np.float32)
    pos, neg = np.array([1, 0, 0, 0], bool), np.array([0, 1, 0, 0], bool)
    obj, box = rpn_loss(objectness, deltas, labels, np.zeros((4, 4), np.float32), pos, neg)
    np.testing.assert_allclose(float(obj), (math.log(2) + 2 + math.log1p(math.exp(-2))) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(box), (0.5 - 1 / 18) / 2, rtol=1e-6)


def test_box_head_loss_by_hand_uses_the_ground_truth_class_deltas():
    logits = np.array([[0.0, 0.0], [0.0, math.log(3)]], np.float32)
    reg = np.array([[7, 7, 7, 7, 7, 7, 7, 7], [9, 9, 9, 9, 1, 0, 0, 0]], np.float32)
    cls, box = box_head_loss(logits, reg, np.array([0, 1]), np.zeros((2, 4), np.float32))
    np.testing.assert_allclose(float(cls), (math.log(2) + math.log(4 / 3)) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(box), (1 - 1 / 18) / 2, rtol=1e-6)
    cls, box = box_head_loss(logits, reg, np.array([0, 1]), np.zeros((2, 4), np.float32),
                             sampled=np.array([True, False]))
    np.testing.assert_allclose([float(cls), float(box)], [math.log(2), 0.0], rtol=1e-6)


def test_mask_loss_by_hand_and_zero_with_a_finite_gradient_without_positives():
    logits = np.zeros((2, 2, 2, 3), np.float32)
    logits[0, :, :, 2] = 2.0
    targets = np.ones((2, 2, 2), np.float32)
    got = mask_loss(logits, targets, np.array([2, 1]), np.array([True, False]))
    np.testing.assert_allclose(float(got), math.log1p(math.exp(-2)), rtol=1e-6)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = mask_loss(x, targets, np.array([2, 1]), np.array([False, False]))
    grad = tape.gradient(loss, x).numpy()
    assert float(loss) == 0.0 and np.isfinite(grad).all() and (grad == 0).all()
