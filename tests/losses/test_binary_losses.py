"""Binary (1-channel) losses against NumPy formulas written here, including segmentation_models 1.0.1's."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg import losses as L
from kseg.errors import KsegError

EPS = 1e-7  # keras.backend.epsilon(), used by segmentation_models and Keras' binary_crossentropy


def value(loss, y_true, y_pred):
    return float(loss(tf.constant(y_true, tf.float32), tf.constant(y_pred, tf.float32)))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------- NumPy references


def valid_only(t, p):
    """The pixels whose target lies in [0, 1], flattened."""
    t, p = np.asarray(t, np.float64).ravel(), np.asarray(p, np.float64).ravel()
    ok = (t >= 0) & (t <= 1)
    return t[ok], p[ok]


def soft_counts(t, p):
    tp = np.sum(t * p)
    return tp, np.sum(p) - tp, np.sum(t) - tp


def sm_iou_score(t, p, smooth=1e-5):
    """segmentation_models 1.0.1 iou_score, per_image=False, one class: summed over all axes."""
    tp, fp, fn = soft_counts(t, p)
    return (tp + smooth) / (tp + fp + fn + smooth)


def sm_f_score(t, p, beta=1.0, smooth=1e-5):
    tp, fp, fn = soft_counts(t, p)
    b2 = beta ** 2
    return ((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth)


def sm_dice_loss(t, p, smooth=1e-5):
    return 1.0 - sm_f_score(t, p, 1.0, smooth)


def sm_binary_ce(t, p):
    """mean of keras.backend.binary_crossentropy (segmentation_models' BinaryCELoss)."""
    p = np.clip(p, EPS, 1 - EPS)
    return np.mean(-(t * np.log(p + EPS) + (1 - t) * np.log(1 - p + EPS)))


def sm_binary_focal(t, p, gamma=2.0, alpha=0.25):
    p = np.clip(p, EPS, 1 - EPS)
    loss_1 = -t * (alpha * (1 - p) ** gamma * np.log(p))
    loss_0 = -(1 - t) * ((1 - alpha) * p ** gamma * np.log(1 - p))
    return np.mean(loss_0 + loss_1)


def tversky(t, p, alpha, beta, smooth):
    tp, fp, fn = soft_counts(t, p)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def lovasz_hinge_flat(logits, labels):
    """Berman et al.'s lovasz_hinge_flat (their reference code), in NumPy."""
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    order = np.argsort(-errors, kind="stable")
    errors_sorted, gt_sorted = errors[order], labels[order]
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return float(np.dot(np.maximum(errors_sorted, 0.0), jaccard))


def logit(p):
    p = np.clip(p, EPS, 1.0)
    q = np.clip(1.0 - p, EPS, 1.0)
    return np.log(p) - np.log(q)


def binary_case(seed, shape=(2, 6, 7, 1), ignore=0.3, soft=False):
    """Targets with 255 and -1 ignored pixels, logits and probabilities."""
    rng = np.random.default_rng(seed)
    t = (rng.random(shape) < 0.4).astype(np.float32)
    if soft:
        t = rng.random(shape).astype(np.float32)
    ignored = rng.random(shape) < ignore
    t[ignored] = np.where(rng.random(ignored.sum()) < 0.5, 255.0, -1.0)
    t[0, 0, 0, 0], t[0, 0, 1, 0] = 1.0, 0.0  # both classes among the valid pixels
    z = rng.normal(0, 2, shape).astype(np.float32)
    return t, z, sigmoid(z).astype(np.float32)


# --------------------------------------------------------------------------- the reported bug


def quarter():
    t = np.zeros((1, 4, 4, 1), np.float32)
    t[0, :2, :2] = 1.0  # 25 % foreground
    return t, np.ones_like(t)  # prediction: all foreground


def test_quarter_foreground_with_an_all_foreground_prediction():
    t, p = quarter()
    iou = 1 - value(L.JaccardLoss(smooth=1e-5), t, p)
    dice = value(L.DiceLoss(smooth=1e-5), t, p)
    assert iou == pytest.approx(0.25, abs=1e-5)
    assert dice == pytest.approx(0.60, abs=1e-5)
    assert iou == pytest.approx(sm_iou_score(*valid_only(t, p)), abs=1e-6)
    assert dice == pytest.approx(sm_dice_loss(*valid_only(t, p)), abs=1e-6)
    # the default smooth 1: (4 + 1) / (16 + 1)
    assert value(L.JaccardLoss(), t, p) == pytest.approx(1 - 5 / 17, abs=1e-6)
    # Tversky: TP 4, FP 12, FN 0
    assert value(L.TverskyLoss(smooth=0), t, p) == pytest.approx(1 - 4 / (4 + 0.3 * 12), abs=1e-6)
    # Lovasz hinge at hard +-1 logits: errors 0 (right) or 2 (wrong) -> 2 (1 - IoU) = 2 * 0.75
    assert value(L.LovaszHingeLoss(from_logits=True), t, 2 * p - 1) == pytest.approx(1.5, abs=1e-6)


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "focal_tversky"])
def test_empty_truth_is_not_perfect_unless_the_prediction_is_empty(name):
    t = np.zeros((1, 4, 4, 1), np.float32)
    t[0, 0] = 255.0  # an ignored row too
    loss = L.get(name, smooth=1e-5)
    assert value(loss, t, np.ones_like(t)) > 0.99
    p = np.full_like(t, 0.01)
    assert value(loss, t, p) > 0.99  # a faint prediction on an empty truth is still all wrong
    assert value(loss, t, np.zeros_like(t)) == pytest.approx(0.0, abs=1e-5)  # focal_tversky: EPSILON^0.75
    # an empty truth and empty prediction on the valid pixels, with foreground predicted where ignored
    p = np.zeros_like(t)
    p[0, 0] = 1.0
    assert value(loss, t, p) == pytest.approx(0.0, abs=1e-5)
    lovasz = L.get("lovasz", from_logits=True)
    assert value(lovasz, t, np.full_like(t, 3.0)) == pytest.approx(4.0, abs=1e-6)  # hinge 1 + 3 of the worst
    assert value(lovasz, t, np.full_like(t, -3.0)) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- against NumPy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_losses_match_numpy_and_segmentation_models(seed):
    t, z, p = binary_case(seed)
    tv, pv = valid_only(t, p)
    assert value(L.DiceLoss(smooth=1e-5), t, p) == pytest.approx(sm_dice_loss(tv, pv), abs=1e-5)
    assert value(L.DiceLoss(smooth=1e-5, classes="all"), t, p) == pytest.approx(sm_dice_loss(tv, pv), abs=1e-5)
    assert value(L.JaccardLoss(smooth=1e-5), t, p) == pytest.approx(1 - sm_iou_score(tv, pv), abs=1e-5)
    assert value(L.DiceLoss(), t, p) == pytest.approx(1 - sm_f_score(tv, pv, smooth=1.0), abs=1e-5)
    assert value(L.TverskyLoss(alpha=0.2, beta=0.8, smooth=0.5), t, p) == pytest.approx(
        1 - tversky(tv, pv, 0.2, 0.8, 0.5), abs=1e-5)
    assert value(L.FocalTverskyLoss(), t, p) == pytest.approx((1 - tversky(tv, pv, 0.3, 0.7, 1.0)) ** 0.75,
                                                                abs=1e-5)
    # from_logits: the same through a sigmoid
    assert value(L.DiceLoss(smooth=1e-5, from_logits=True), t, z) == pytest.approx(sm_dice_loss(tv, pv), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_and_focal_match_segmentation_models(seed):
    t, z, p = binary_case(seed)
    tv, pv = valid_only(t, p)
    for name in ("bce", "binary_crossentropy", "ce"):
        assert value(L.get(name), t, p) == pytest.approx(sm_binary_ce(tv, pv), rel=1e-5), name
    for name in ("binary_focal", "focal"):
        assert value(L.get(name), t, p) == pytest.approx(sm_binary_focal(tv, pv), rel=1e-5), name
    focal = L.BinaryFocalLoss(gamma=1.5, alpha=0.6)
    assert value(focal, t, p) == pytest.approx(sm_binary_focal(tv, pv, gamma=1.5, alpha=0.6), rel=1e-5)
    # logits: log-sigmoid, exact
    zv = valid_only(t, z)[1]
    bce_logits = np.mean(tv * np.log1p(np.exp(-zv)) + (1 - tv) * np.log1p(np.exp(zv)))
    assert value(L.BinaryCrossentropy(from_logits=True), t, z) == pytest.approx(bce_logits, rel=1e-5)
    assert value(L.BinaryFocalLoss(from_logits=True), t, z) == pytest.approx(sm_binary_focal(tv, pv), rel=1e-4)


def test_soft_targets_and_class_weights():
    t, z, p = binary_case(4, soft=True)
    tv, pv = valid_only(t, p)
    assert value(L.BinaryCrossentropy(), t, p) == pytest.approx(sm_binary_ce(tv, pv), rel=1e-5)
    w = (1 - tv) * 0.5 + tv * 3.0
    ce = -(tv * np.log(pv) + (1 - tv) * np.log(1 - pv))
    assert value(L.BinaryCrossentropy(class_weights=[0.5, 3.0]), t, p) == pytest.approx(np.mean(w * ce), rel=1e-5)
    assert value(L.get("ce", class_weights=[0.5, 3.0]), t, p) == pytest.approx(np.mean(w * ce), rel=1e-5)
    # two alpha values: (background, foreground)
    assert value(L.BinaryFocalLoss(alpha=[0.75, 0.25]), t, p) == pytest.approx(sm_binary_focal(tv, pv), rel=1e-5)
    # the overlap losses measure the foreground alone: class weights do not change them
    assert value(L.DiceLoss(class_weights=[0.5, 3.0]), t, p) == pytest.approx(value(L.DiceLoss(), t, p), abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lovasz_hinge_matches_berman_reference(seed):
    t, z, p = binary_case(seed)
    tv, zv = valid_only(t, z)
    expected = lovasz_hinge_flat(zv, tv)
    for name in ("lovasz_hinge", "lovasz"):
        assert value(L.get(name, from_logits=True), t, z) == pytest.approx(expected, rel=1e-5, abs=1e-6), name
    # probabilities: the logit of the clipped probability
    pv = valid_only(t, p)[1]
    assert value(L.LovaszHingeLoss(), t, p) == pytest.approx(lovasz_hinge_flat(logit(pv), tv), rel=1e-4)
    assert value(L.LovaszHingeLoss(), t, p) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", ["ce", "focal", "dice", "jaccard", "tversky", "focal_tversky", "lovasz"])
def test_from_logits_equals_probabilities(name):
    t, z, p = binary_case(6)
    z = np.clip(z, -4, 4)
    p = sigmoid(z).astype(np.float32)
    assert value(L.get(name, from_logits=True), t, z) == pytest.approx(value(L.get(name), t, p), rel=1e-4)


BINARY_SPECS = ["ce", "bce", "focal", "binary_focal", "dice", "jaccard", "tversky", "focal_tversky", "lovasz",
                "lovasz_hinge", "dice+0.5*bce", "binary_focal+2*lovasz_hinge"]


@pytest.mark.parametrize("spec", BINARY_SPECS)
@pytest.mark.parametrize("seed", [0, 1])
def test_ignored_pixels_are_as_if_absent(spec, seed):
    t, z, p = binary_case(seed)
    ok = (t >= 0) & (t <= 1)
    for from_logits, pred in ((False, p), (True, z)):
        loss = L.get(spec, from_logits=from_logits)
        full = value(loss, t, pred)
        only = value(loss, t[ok][None, None, :, None], pred[ok][None, None, :, None])
        assert full == pytest.approx(only, rel=1e-5, abs=1e-6)
        scrambled = pred.copy()
        scrambled[~ok] = pred.max() if seed else pred.min()  # what is predicted at ignored pixels does not matter
        assert value(loss, t, scrambled) == pytest.approx(full, rel=1e-5, abs=1e-6)
    # sparse (N, H, W) targets are the same as (N, H, W, 1)
    assert value(L.get(spec), t[..., 0], p) == pytest.approx(value(L.get(spec), t, p), rel=1e-6)


def test_multi_class_names_dispatch_on_the_channel_count():
    t, z, p = binary_case(9)
    assert value(L.get("ce"), t, p) == pytest.approx(value(L.BinaryCrossentropy(), t, p), rel=1e-7)
    assert value(L.get("focal"), t, p) == pytest.approx(value(L.BinaryFocalLoss(), t, p), rel=1e-7)
    assert value(L.get("lovasz"), t, p) == pytest.approx(value(L.LovaszHingeLoss(), t, p), rel=1e-7)
    assert isinstance(L.get("bce"), L.BinaryCrossentropy)
    assert isinstance(L.get("binary_crossentropy"), L.BinaryCrossentropy)
    assert isinstance(L.get("binary-focal"), L.BinaryFocalLoss)
    assert isinstance(L.get("lovasz_hinge"), L.LovaszHingeLoss)
    assert L.get("bce+dice").name == "binary_crossentropy_plus_dice"


def test_channel_mismatch_and_binary_only_losses_raise_clear_errors():
    t1 = np.zeros((1, 4, 4, 1), np.float32)
    t3 = np.zeros((1, 4, 4, 3), np.float32)
    t3[..., 0] = 1.0
    p1 = np.full((1, 4, 4, 1), 0.5, np.float32)
    p3 = np.full((1, 4, 4, 3), 1 / 3, np.float32)
    for name in ("ce", "dice", "focal", "lovasz", "bce"):
        with pytest.raises(KsegError, match="targets have 1 channel .* predictions have 3"):
            value(L.get(name), t1, p3)
        with pytest.raises(KsegError, match="predictions have 1 channel .* targets have 3"):
            value(L.get(name), t3, p1)
    for name in ("bce", "binary_focal", "lovasz_hinge"):
        with pytest.raises(KsegError, match="needs a binary model .* 3 channels"):
            value(L.get(name), t3, p3)
    with pytest.raises(KsegError, match="3 class weights for 2 classes"):
        value(L.BinaryCrossentropy(class_weights=[1, 2, 3]), t1, p1)
    with pytest.raises(KsegError, match="3 alpha values for a binary model"):
        value(L.FocalLoss(alpha=[0.2, 0.3, 0.5]), t1, p1)


def _grad(loss, y_true, y_pred):
    x = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        out = loss(tf.constant(y_true), x)
    return float(out), tape.gradient(out, x).numpy()


@pytest.mark.parametrize("spec, kw", [(spec, {}) for spec in BINARY_SPECS] + [
    ("focal", {"gamma": 0.5}), ("binary_focal", {"gamma": 0.5}), ("focal_tversky", {"gamma": 0.5})])
def test_finite_gradients_at_perfect_and_worst_predictions(spec, kw):
    rng = np.random.default_rng(11)
    t = (rng.random((2, 4, 4, 1)) < 0.5).astype(np.float32)
    t[0, 0, :2] = 255.0
    hard = np.where(t > 1, 0.0, t).astype(np.float32)
    perfect, worst = hard, 1.0 - hard
    loss = L.get(spec, **kw)
    best_val, g_best = _grad(loss, t, perfect)
    worst_val, g_worst = _grad(loss, t, worst)
    assert np.isfinite([best_val, worst_val]).all()
    assert np.isfinite(g_best).all() and np.isfinite(g_worst).all()
    assert best_val == pytest.approx(0.0, abs=1e-3) and worst_val > best_val + 0.1
    loss = L.get(spec, from_logits=True, **kw)
    for target in (perfect, worst):
        for scale in (20.0, 40.0):
            v, g = _grad(loss, t, ((2 * target - 1) * scale).astype(np.float32))
            assert np.isfinite(v) and np.isfinite(g).all()
            if target is worst and not any(n in spec for n in ("dice", "jaccard", "tversky")):
                # log-sigmoid and hinge terms keep pushing saturated wrong logits
                assert np.abs(g).sum() > 1e-3
    # gradients do not reach ignored pixels
    _, g = _grad(loss, t, np.zeros_like(t))
    assert np.all(g[t > 1] == 0) and np.abs(g[t <= 1]).sum() > 0


@pytest.mark.parametrize("loss", [L.BinaryCrossentropy(from_logits=True, class_weights=[1.0, 2.0]),
                                  L.BinaryFocalLoss(gamma=1.5, alpha=0.4),
                                  L.LovaszHingeLoss(from_logits=True),
                                  L.BinaryCrossentropy() + 0.5 * L.DiceLoss(smooth=1e-5)])
def test_serialisation_round_trip(loss):
    t, z, p = binary_case(5)
    pred = z if getattr(loss, "from_logits", False) else p
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    assert value(again, t, pred) == pytest.approx(value(loss, t, pred), rel=1e-6)
    again = type(loss).from_config(loss.get_config())
    assert value(again, t, pred) == pytest.approx(value(loss, t, pred), rel=1e-6)
