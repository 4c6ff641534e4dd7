"""Losses: hand-computed values, ignore-awareness, composition, gradients, serialisation."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PRED_5x5, TRUTH_5x5
from kseg import losses as L
from kseg.errors import KsegError

ALL = ["ce", "dice", "focal", "jaccard", "tversky", "focal_tversky", "lovasz"]


def one_hot(labels, c):
    """One-hot float32 targets; ids < 0 become all-zero rows (ignored)."""
    labels = np.asarray(labels)
    return (np.eye(c, dtype=np.float32)[np.clip(labels, 0, c - 1)] * (labels >= 0)[..., None]).astype(np.float32)


def value(loss, y_true, y_pred):
    return float(loss(tf.constant(y_true, tf.float32), tf.constant(y_pred, tf.float32)))




def test_the_5x5_masks_are_what_the_issue_says():
    t, p = TRUTH_5x5 == 1, PRED_5x5 == 1
    assert (t.sum(), p.sum(), (t & p).sum()) == (14, 15, 11)
    assert round(11 / 18, 4) == 0.6111 and round(22 / 29, 4) == 0.7586


@pytest.mark.parametrize("name, expected", [
    ("dice", 1 - 22 / 29),                     # 1 - 2 TP / (|T| + |P|)
    ("jaccard", 1 - 11 / 18),                  # 1 - TP / union
    ("lovasz", 1 - 11 / 18),                   # the Lovasz extension equals 1 - IoU at hard predictions
    ("tversky", 1 - 11 / (11 + 0.3 * 4 + 0.7 * 3)),  # TP 11, FP 4, FN 3
    ("focal_tversky", (1 - 11 / (11 + 0.3 * 4 + 0.7 * 3)) ** 0.75),
])
def test_region_losses_on_the_5x5_masks(name, expected):
    # class_weights [0, 1]: the loss of the foreground class alone; smooth 0 to match the formulas
    kw = {"class_weights": [0.0, 1.0]}
    if name != "lovasz":
        kw["smooth"] = 0.0
    loss = L.get(name, **kw)
    y_true, y_pred = one_hot(TRUTH_5x5[None], 2), one_hot(PRED_5x5[None], 2)
    assert value(loss, y_true, y_pred) == pytest.approx(expected, abs=1e-5)


def test_dice_and_jaccard_mean_over_present_classes_of_5x5():
    y_true, y_pred = one_hot(TRUTH_5x5[None], 2), one_hot(PRED_5x5[None], 2)
    # background: |T| 11, |P| 10, overlap 7
    dice_bg, iou_bg = 14 / 21, 7 / 14
    assert value(L.DiceLoss(smooth=0), y_true, y_pred) == pytest.approx(1 - (dice_bg + 22 / 29) / 2, abs=1e-5)
    assert value(L.JaccardLoss(smooth=0), y_true, y_pred) == pytest.approx(1 - (iou_bg + 11 / 18) / 2, abs=1e-5)
    assert value(L.LovaszSoftmaxLoss(), y_true, y_pred) == pytest.approx(1 - (iou_bg + 11 / 18) / 2, abs=1e-5)


def test_cross_entropy_and_focal_by_hand_with_an_ignored_pixel():
    y_true = np.array([[[[1, 0, 0], [0, 1, 0], [0, 0, 0]]]], np.float32)  # third pixel ignored
    y_pred = np.array([[[[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.01, 0.01, 0.98]]]], np.float32)
    ce = (-math.log(0.7) - math.log(0.4)) / 2
    assert value(L.CategoricalCrossentropy(), y_true, y_pred) == pytest.approx(ce, rel=1e-5)
    focal = (-0.25 * 0.3 ** 2 * math.log(0.7) - 0.25 * 0.6 ** 2 * math.log(0.4)) / 2
    assert value(L.FocalLoss(), y_true, y_pred) == pytest.approx(focal, rel=1e-5)
    # alpha per class and gamma 1
    focal = (-0.5 * 0.3 * math.log(0.7) - 2.0 * 0.6 * math.log(0.4)) / 2
    assert value(L.FocalLoss(gamma=1, alpha=[0.5, 2.0, 1.0]), y_true, y_pred) == pytest.approx(focal, rel=1e-5)
    # class weights multiply each pixel's term
    ce_w = (-1.0 * math.log(0.7) - 3.0 * math.log(0.4)) / 2
    assert value(L.CategoricalCrossentropy(class_weights=[1, 3, 5]), y_true, y_pred) == pytest.approx(ce_w, rel=1e-5)


def test_lovasz_by_hand_on_soft_predictions():
    # foreground class only (weights [0, 1]); truth 1 0 1, foreground probabilities 0.8 0.4 0.3
    y_true = one_hot(np.array([[[1, 0, 1]]]), 2)
    fg = np.array([0.8, 0.4, 0.3], np.float32)
    y_pred = np.stack([1 - fg, fg], -1)[None, None]
    # errors 0.2 0.4 0.7 -> sorted 0.7 (fg) 0.4 (bg) 0.2 (fg); 1 - IoU along that order: 1/2, 2/3, 1
    expected = 0.7 * 0.5 + 0.4 * (2 / 3 - 1 / 2) + 0.2 * (1 - 2 / 3)
    assert value(L.LovaszSoftmaxLoss(class_weights=[0, 1]), y_true, y_pred) == pytest.approx(expected, abs=1e-6)


def test_dice_smoothing_and_class_weights():
    y_true, y_pred = one_hot(TRUTH_5x5[None], 2), one_hot(PRED_5x5[None], 2)
    s = 1.0
    dice_bg, dice_fg = (14 + s) / (21 + s), (22 + s) / (29 + s)
    assert value(L.DiceLoss(smooth=s), y_true, y_pred) == pytest.approx(1 - (dice_bg + dice_fg) / 2, abs=1e-5)
    w = [1.0, 3.0]
    expected = 1 - (dice_bg + 3 * dice_fg) / 4
    assert value(L.DiceLoss(smooth=s, class_weights=w), y_true, y_pred) == pytest.approx(expected, abs=1e-5)


def test_present_versus_all_classes():
    # class 2 never appears in the truth: "present" leaves it out, "all" counts its (smoothed) score
    y_true = one_hot(TRUTH_5x5[None], 3)
    y_pred = one_hot(PRED_5x5[None], 3)
    present = value(L.DiceLoss(smooth=0), y_true, y_pred)
    every = value(L.DiceLoss(smooth=1.0, classes="all"), y_true, y_pred)
    assert present == pytest.approx(1 - (14 / 21 + 22 / 29) / 2, abs=1e-5)
    assert every == pytest.approx(1 - ((15 / 22) + (23 / 30) + 1.0) / 3, abs=1e-5)


def test_tversky_special_cases():
    rng = np.random.default_rng(3)
    y_true = one_hot(rng.integers(-1, 3, (2, 6, 6)), 3)
    y_pred = rng.dirichlet(np.ones(3), (2, 6, 6)).astype(np.float32)
    # (TP + s) / (TP + (FP + FN) / 2 + s) = (2 TP + 2 s) / (2 TP + FP + FN + 2 s): Dice with twice the smoothing
    dice, jac = value(L.DiceLoss(smooth=2.0), y_true, y_pred), value(L.JaccardLoss(), y_true, y_pred)
    assert value(L.TverskyLoss(alpha=0.5, beta=0.5), y_true, y_pred) == pytest.approx(dice, abs=1e-6)
    assert value(L.TverskyLoss(alpha=1, beta=1), y_true, y_pred) == pytest.approx(jac, abs=1e-6)
    assert value(L.TverskyLoss(alpha=0.5, beta=0.5, smooth=0), y_true, y_pred) == pytest.approx(
        value(L.DiceLoss(smooth=0), y_true, y_pred), abs=1e-6)
    ft = value(L.FocalTverskyLoss(alpha=0.5, beta=0.5, gamma=1.0), y_true, y_pred)
    assert ft == pytest.approx(dice, abs=1e-6)
    # beta > alpha punishes missed pixels more: an under-segmenting prediction scores worse
    under = y_true * 0.5
    assert value(L.TverskyLoss(alpha=0.3, beta=0.7), y_true, under) > value(L.TverskyLoss(alpha=0.7, beta=0.3),
                                                                            y_true, under)


def _ignore_case(seed, c=3, shape=(2, 5, 6)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, shape)
    ignored = rng.random(shape) < 0.3
    labels[0, 0, 0] = 0  # keep at least one valid pixel
    ignored[0, 0, 0] = False
    logits = rng.normal(0, 2, (*shape, c)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y_full = one_hot(np.where(ignored, -1, labels), c)
    valid = ~ignored
    y_valid = one_hot(labels[valid], c)[None, None]
    return y_full, probs, logits, y_valid, probs[valid][None, None], logits[valid][None, None]


LOSS_CASES = [(name, {}) for name in ALL] + [
    ("ce", {"class_weights": [1.0, 2.0, 0.5]}),
    ("dice", {"class_weights": [1.0, 2.0, 0.5], "classes": "all"}),
    ("focal", {"alpha": [0.2, 0.5, 0.3], "gamma": 1.5}),
    ("lovasz", {"classes": "all"}),
    ("dice+0.5*focal", {}),
    ("ce+jaccard+2*lovasz", {}),
]


@pytest.mark.parametrize("spec, kw", LOSS_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ignored_pixels_are_as_if_absent(spec, kw, seed):
    y_full, probs, logits, y_valid, probs_valid, logits_valid = _ignore_case(seed)
    loss = L.get(spec, **kw)
    full, only = value(loss, y_full, probs), value(loss, y_valid, probs_valid)
    assert full == pytest.approx(only, rel=1e-5, abs=1e-6)
    # ... and whatever the model predicts at ignored pixels does not matter
    scrambled = probs.copy()
    scrambled[y_full.sum(-1) == 0] = np.array([1.0, 0.0, 0.0], np.float32)
    assert value(loss, y_full, scrambled) == pytest.approx(full, rel=1e-5, abs=1e-6)
    with_logits = L.get(spec, from_logits=True, **kw)
    assert value(with_logits, y_full, logits) == pytest.approx(value(with_logits, y_valid, logits_valid),
                                                               rel=1e-5, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(2, 4))
def test_lovasz_at_hard_predictions_is_one_minus_miou(seed, c):
    rng = np.random.default_rng(seed)
    truth = rng.integers(-1, c, (2, 3, 4))
    pred = rng.integers(0, c, (2, 3, 4))
    valid = truth >= 0
    ious = []
    for k in range(c):
        t, p = (truth == k) & valid, (pred == k) & valid
        if t.any():
            ious.append((t & p).sum() / (t | p).sum())
    got = value(L.LovaszSoftmaxLoss(), one_hot(truth, c), one_hot(pred, c))
    expected = 1 - np.mean(ious) if ious else 0.0
    assert got == pytest.approx(expected, abs=1e-5)


def test_weighted_sums_compose():
    y_full, probs, *_ = _ignore_case(7)
    dice, focal = L.DiceLoss(), L.FocalLoss()
    combo = dice + 0.5 * focal
    assert isinstance(combo, L.SumLoss) and combo.weights == [1.0, 0.5]
    expected = value(dice, y_full, probs) + 0.5 * value(focal, y_full, probs)
    assert value(combo, y_full, probs) == pytest.approx(expected, rel=1e-6)
    assert value(L.get("dice+0.5*focal"), y_full, probs) == pytest.approx(expected, rel=1e-6)
    assert value(L.get("0.5*focal + dice"), y_full, probs) == pytest.approx(expected, rel=1e-6)
    assert value(sum([dice, 0.5 * focal]), y_full, probs) == pytest.approx(expected, rel=1e-6)
    nested = 2 * (dice + L.JaccardLoss()) + L.LovaszSoftmaxLoss()
    assert nested.weights == [2.0, 2.0, 1.0]
    expected = 2 * value(dice, y_full, probs) + 2 * value(L.JaccardLoss(), y_full, probs) + value(
        L.LovaszSoftmaxLoss(), y_full, probs)
    assert value(nested, y_full, probs) == pytest.approx(expected, rel=1e-6)


def test_get_names_and_errors():
    assert isinstance(L.get("tversky"), L.TverskyLoss)
    assert isinstance(L.get("focal_tversky"), L.FocalTverskyLoss)
    assert isinstance(L.get("focal-tversky"), L.FocalTverskyLoss)
    assert isinstance(L.get("jaccard"), L.JaccardLoss)
    assert isinstance(L.get("lovasz"), L.LovaszSoftmaxLoss)
    combo = L.get("dice+focal", gamma=3.0)
    assert combo.losses[1].gamma == 3.0
    for bad in ("dise", "dice+", "x*dice", "dice*focal"):
        with pytest.raises(KsegError, match="unknown loss"):
            L.get(bad)
    with pytest.raises(KsegError, match="gamma"):
        L.get("dice", gamma=2.0)
    with pytest.raises(KsegError, match="class weights"):
        L.DiceLoss(class_weights=[1, 2])(one_hot(TRUTH_5x5[None], 3), one_hot(PRED_5x5[None], 3))


@pytest.mark.parametrize("spec, kw", LOSS_CASES)
def test_serialisation_round_trip(spec, kw):
    y_full, probs, *_ = _ignore_case(5)
    loss = L.get(spec, **kw)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss)
    assert value(again, y_full, probs) == pytest.approx(value(loss, y_full, probs), rel=1e-6)


def _grad(loss, y_true, y_pred):
    x = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        out = loss(tf.constant(y_true), x)
    return float(out), tape.gradient(out, x).numpy()


@pytest.mark.parametrize("spec, kw", LOSS_CASES + [("focal", {"gamma": 0.5}), ("focal_tversky", {"gamma": 0.5})])
def test_finite_gradients_at_perfect_and_worst_predictions(spec, kw):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, (2, 4, 4))
    labels[0, 0, :2] = -1  # a few ignored pixels
    y_true = one_hot(labels, 3)
    perfect = one_hot(np.clip(labels, 0, 2), 3)
    worst = one_hot((np.clip(labels, 0, 2) + 1) % 3, 3)
    loss = L.get(spec, **kw)
    best_val, g_best = _grad(loss, y_true, perfect)
    worst_val, g_worst = _grad(loss, y_true, worst)
    assert np.isfinite(best_val) and np.isfinite(worst_val)
    assert np.isfinite(g_best).all() and np.isfinite(g_worst).all()
    if spec not in ("ce", "focal"):  # these clip probabilities at 1e-7: no gradient from a hard 0
        assert np.abs(g_worst).sum() > 0  # a wrong prediction gets pushed somewhere
    assert best_val < worst_val
    assert best_val == pytest.approx(0.0, abs=1e-3)
    # the same through logits (from_logits=True), saturated both ways
    loss = L.get(spec, from_logits=True, **kw)
    for target in (perfect, worst):
        v, g = _grad(loss, y_true, (target * 40.0 - 20.0).astype(np.float32))
        assert np.isfinite(v) and np.isfinite(g).all()
        parts = loss.losses if isinstance(loss, L.SumLoss) else [loss]
        if target is worst and any(isinstance(p, (L.CategoricalCrossentropy, L.FocalLoss)) for p in parts):
            # saturated wrong logits still get a gradient from the log-softmax terms (no clipping);
            # the overlap losses see probabilities, which a saturated softmax no longer moves
            assert np.abs(g).sum() > 1e-3
