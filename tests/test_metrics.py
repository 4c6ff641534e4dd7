"""Metrics: hand-computed cases, NumPy property tests, batch-split invariance, agreement with Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import PRED_5x5, TRUTH_5x5
from kseg import metrics as M
from kseg.errors import KsegError



def one_hot(labels, c):
    """One-hot float32; ids outside [0, C) become all-zero rows (ignored)."""
    labels = np.asarray(labels)
    ok = (labels >= 0) & (labels < c)
    return (np.eye(c, dtype=np.float32)[np.where(ok, labels, 0)] * ok[..., None]).astype(np.float32)


def keras_result(metric, truth, pred, c, sparse=False):
    """Feed label maps to a Keras metric (one-hot or sparse-255 targets, one-hot 'probabilities')."""
    y_true = np.where((truth < 0) | (truth >= c), 255, truth).astype(np.int32) if sparse else one_hot(truth, c)
    metric.update_state(y_true, one_hot(pred, c))
    return float(metric.result())


def all_metrics(c):
    return {"pixel_accuracy": M.PixelAccuracy(c), "mean_accuracy": M.MeanClassAccuracy(c), "miou": M.MeanIoU(c),
            "fw_iou": M.FrequencyWeightedIoU(c), "mean_dice": M.DiceScore(c),
            "mean_precision": M.Precision(c), "mean_recall": M.Recall(c)}


# --------------------------------------------------------------------------- by hand


def test_5x5_masks_foreground_iou_and_dice():
    t, p = TRUTH_5x5[None], PRED_5x5[None]
    assert round(keras_result(M.IoU(2, class_id=1), t, p, 2), 4) == 0.6111
    assert round(keras_result(M.DiceScore(2, class_id=1), t, p, 2), 4) == 0.7586
    assert keras_result(M.F1Score(2, class_id=1), t, p, 2) == pytest.approx(22 / 29)
    s = M.scores(M.confusion_matrix(t, p, 2), ["background", "foreground"])
    assert round(s["iou"]["foreground"], 4) == 0.6111
    assert round(s["dice"]["foreground"], 4) == 0.7586


def test_5x5_masks_every_score_by_hand():
    t, p = TRUTH_5x5[None], PRED_5x5[None]
    # confusion matrix: background row [7, 4], foreground row [3, 11]
    cm = M.confusion_matrix(t, p, 2)
    assert cm.tolist() == [[7, 4], [3, 11]]
    iou_bg, iou_fg = 7 / 14, 11 / 18
    expected = {
        "pixel_accuracy": 18 / 25,
        "mean_accuracy": (7 / 11 + 11 / 14) / 2,
        "miou": (iou_bg + iou_fg) / 2,
        "fw_iou": (11 * iou_bg + 14 * iou_fg) / 25,
        "mean_dice": (14 / 21 + 22 / 29) / 2,
        "mean_precision": (7 / 10 + 11 / 15) / 2,
        "mean_recall": (7 / 11 + 11 / 14) / 2,
    }
    s = M.scores(cm, ["bg", "fg"])
    for key, want in expected.items():
        assert s[key] == pytest.approx(want), key
        assert keras_result(all_metrics(2)[key], t, p, 2) == pytest.approx(want, abs=1e-6), key
    assert s["precision"] == pytest.approx({"bg": 0.7, "fg": 11 / 15})
    assert s["recall"] == pytest.approx({"bg": 7 / 11, "fg": 11 / 14})
    assert s["support"] == {"bg": 11, "fg": 14} and s["predicted"] == {"bg": 10, "fg": 15}
    assert keras_result(M.Precision(2, class_id=1), t, p, 2) == pytest.approx(11 / 15)
    assert keras_result(M.Recall(2, class_id=0), t, p, 2) == pytest.approx(7 / 11)


def test_absent_classes_are_left_out_and_reported():
    # 4 classes: 0 and 1 in both, 2 only predicted, 3 nowhere; one ignored pixel (-1)
    truth = np.array([[[0, 0, 1, 1, -1]]])
    pred = np.array([[[0, 2, 1, 1, 3]]])
    names = ["a", "b", "c", "d"]
    s = M.scores(M.confusion_matrix(truth, pred, 4), names)
    assert s["absent"] == ["d"] and s["present"] == ["a", "b", "c"]
    assert s["iou"] == {"a": 0.5, "b": 1.0, "c": 0.0, "d": None}
    assert s["miou"] == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3: d left out, c (a false positive) counted
    assert s["accuracy"]["c"] is None  # no truth pixel: no class accuracy
    assert s["mean_accuracy"] == pytest.approx(0.75)  # FCN: over classes in the truth
    assert s["recall"]["c"] == 0.0 and s["precision"]["c"] == 0.0
    assert s["pixels"] == 4  # the ignored pixel (predicted d) is not counted, so d stays absent
    assert keras_result(M.MeanIoU(4), truth, pred, 4) == pytest.approx(0.5)
    assert np.isnan(keras_result(M.IoU(4, class_id=3), truth, pred, 4))
    assert keras_result(M.IoU(4, class_id=2), truth, pred, 4) == 0.0


def test_empty_evaluation_gives_nan_reports_and_zero_keras_metrics():
    s = M.scores(np.zeros((3, 3), np.int64))
    assert np.isnan(s["miou"]) and np.isnan(s["pixel_accuracy"]) and s["absent"] == ["0", "1", "2"]
    m = M.MeanIoU(3)
    assert float(m.result()) == 0.0


def test_confusion_matrix_rejects_bad_predictions():
    with pytest.raises(ValueError, match="predicted class ids"):
        M.confusion_matrix(np.array([0, 1]), np.array([0, 5]), 3)
    with pytest.raises(ValueError, match="pixels"):
        M.confusion_matrix(np.array([0, 1]), np.array([0, 1, 1]), 3)


# --------------------------------------------------------------------------- NumPy reference


def reference(truth, pred, c):
    """Every score by direct counting with boolean masks (no confusion matrix)."""
    valid = (truth >= 0) & (truth < c)
    t = truth[valid]
    p = pred[valid]
    n = t.size
    tp = np.array([np.sum((t == k) & (p == k)) for k in range(c)], float)
    fp = np.array([np.sum((t != k) & (p == k)) for k in range(c)], float)
    fn = np.array([np.sum((t == k) & (p != k)) for k in range(c)], float)
    present = (tp + fp + fn) > 0
    in_truth = (tp + fn) > 0
    iou = [tp[k] / (tp[k] + fp[k] + fn[k]) for k in range(c) if present[k]]
    dice = [2 * tp[k] / (2 * tp[k] + fp[k] + fn[k]) for k in range(c) if present[k]]
    prec = [tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else 0.0 for k in range(c) if present[k]]
    rec = [tp[k] / (tp[k] + fn[k]) if tp[k] + fn[k] else 0.0 for k in range(c) if present[k]]
    acc = [tp[k] / (tp[k] + fn[k]) for k in range(c) if in_truth[k]]
    fw = sum((tp[k] + fn[k]) / n * tp[k] / (tp[k] + fp[k] + fn[k]) for k in range(c) if in_truth[k]) if n else None
    mean = (lambda v: float(np.mean(v)) if v else None)  # noqa: E731
    out = {"pixel_accuracy": float(np.mean(t == p)) if n else None, "mean_accuracy": mean(acc),
           "miou": mean(iou), "fw_iou": fw, "mean_dice": mean(dice), "mean_precision": mean(prec),
           "mean_recall": mean(rec)}
    per_class = {k: (tp[k] / (tp[k] + fp[k] + fn[k]) if present[k] else None) for k in range(c)}
    return out, per_class


label_maps = st.integers(2, 5).flatmap(lambda c: st.tuples(
    st.just(c),
    hnp.arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
               elements=st.sampled_from(list(range(c)) + [-1, 255])),
    st.randoms(use_true_random=False),
))


@settings(max_examples=40, deadline=None)
@given(label_maps)
def test_scores_match_numpy_reference(case):
    c, truth, rnd = case
    pred = np.array([rnd.randrange(c) for _ in range(truth.size)]).reshape(truth.shape)
    ref, per_class = reference(truth, pred, c)
    s = M.scores(M.confusion_matrix(truth, pred, c))
    for key, want in ref.items():
        if want is None:
            assert np.isnan(s[key]), key
        else:
            assert s[key] == pytest.approx(want, abs=1e-12), key
    assert [s["iou"][str(k)] for k in range(c)] == pytest.approx([per_class[k] for k in range(c)])


@settings(max_examples=30, deadline=None)
@given(label_maps, st.booleans())
def test_keras_metrics_match_numpy_reference(case, sparse):
    c, truth, rnd = case
    pred = np.array([rnd.randrange(c) for _ in range(truth.size)]).reshape(truth.shape)
    ref, per_class = reference(truth, pred, c)
    for key, metric in all_metrics(c).items():
        got = keras_result(metric, truth, pred, c, sparse=sparse)
        assert got == pytest.approx(ref[key] if ref[key] is not None else 0.0, abs=1e-6), key
    k = rnd.randrange(c)
    got = keras_result(M.IoU(c, class_id=k), truth, pred, c, sparse=sparse)
    if per_class[k] is None:
        assert np.isnan(got)
    else:
        assert got == pytest.approx(per_class[k], abs=1e-6)


# --------------------------------------------------------------------------- accumulation


def _eight_images(seed=0, c=3):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, c, (8, 6, 6))
    # the better images have fewer valid pixels, so per-batch averages differ from the whole-set value
    truth[rng.random(truth.shape) < np.linspace(0.0, 0.8, 8)[:, None, None]] = -1
    pred = np.where(rng.random(truth.shape) < np.linspace(0.1, 0.95, 8)[:, None, None],
                    np.clip(truth, 0, c - 1), rng.integers(0, c, truth.shape))
    return truth, pred


def test_one_batch_of_8_equals_8_batches_of_1():
    truth, pred = _eight_images()
    for key in all_metrics(3):
        whole = all_metrics(3)[key]
        whole.update_state(one_hot(truth, 3), one_hot(pred, 3))
        split = all_metrics(3)[key]
        per_batch = []
        for i in range(8):
            split.update_state(one_hot(truth[i:i + 1], 3), one_hot(pred[i:i + 1], 3))
            single = all_metrics(3)[key]
            single.update_state(one_hot(truth[i:i + 1], 3), one_hot(pred[i:i + 1], 3))
            per_batch.append(float(single.result()))
        assert float(split.result()) == pytest.approx(float(whole.result()), abs=1e-7), key
        if key in ("pixel_accuracy", "miou", "mean_dice"):
            assert abs(np.mean(per_batch) - float(whole.result())) > 1e-3  # the test can tell them apart


def test_model_evaluate_is_batch_size_invariant():
    from kseg import losses

    truth, pred = _eight_images(1)
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=losses.CategoricalCrossentropy(),
                  metrics=M.segmentation_metrics(3, ["a", "b", "c"], per_class=True))
    x, y = one_hot(pred, 3), one_hot(truth, 3)
    big = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    small = model.evaluate(x, y, batch_size=1, verbose=0, return_dict=True)
    s = M.scores(M.confusion_matrix(truth, pred, 3), ["a", "b", "c"])
    for key in ("pixel_accuracy", "mean_accuracy", "miou", "fw_iou", "mean_dice", "mean_precision", "mean_recall"):
        assert big[key] == pytest.approx(s[key], abs=1e-6), key
        assert small[key] == pytest.approx(s[key], abs=1e-6), key
    for name in "abc":
        assert small[f"iou_{name}"] == pytest.approx(s["iou"][name], abs=1e-6)


# --------------------------------------------------------------------------- Keras and serialisation


@settings(max_examples=15, deadline=None)
@given(label_maps)
def test_agrees_with_keras_mean_iou(case):
    c, truth, rnd = case
    pred = np.array([rnd.randrange(c) for _ in range(truth.size)]).reshape(truth.shape)
    sparse = np.where((truth < 0) | (truth >= c), 255, truth)
    ours = M.MeanIoU(c)
    ours.update_state(sparse, one_hot(pred, c))
    theirs = keras.metrics.MeanIoU(c, ignore_class=255)
    theirs.update_state(sparse, pred)
    assert float(ours.result()) == pytest.approx(float(theirs.result()), abs=1e-6)
    onehot = keras.metrics.OneHotMeanIoU(c)
    valid = (truth >= 0) & (truth < c)
    onehot.update_state(one_hot(truth[valid], c), one_hot(pred[valid], c))  # Keras has no ignore for one-hot
    assert float(ours.result()) == pytest.approx(float(onehot.result()), abs=1e-6)
    cm = M.confusion_matrix(truth, pred, c)
    for k in range(c):
        if cm[k].sum() + cm[:, k].sum() > 0:  # present: Keras' per-class IoU is defined the same way
            keras_iou = keras.metrics.IoU(c, target_class_ids=[k], ignore_class=255)
            keras_iou.update_state(sparse, pred)
            assert float(keras_iou.result()) == pytest.approx(M.scores(cm)["iou"][str(k)], abs=1e-6)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_metrics_serialise_and_load_with_a_keras_file(tmp_path):
    from kseg import losses

    inputs = keras.Input((8, 8, 3))
    out = keras.layers.Conv2D(3, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, out)
    metrics = M.segmentation_metrics(3, ["sky", "horizontal", "vertical"], per_class=True)
    model.compile(optimizer="adam", loss=losses.get("dice+0.5*focal"), metrics=metrics)
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    y = one_hot(rng.integers(-1, 3, (4, 8, 8)), 3)
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)  # compiled: loss and metrics too
    after = again.evaluate(x, y, verbose=0, return_dict=True)
    assert set(before) == set(after) and "iou_horizontal" in after
    for k in before:
        assert after[k] == pytest.approx(before[k], abs=1e-6), k
    for m in metrics:
        clone = keras.metrics.deserialize(keras.metrics.serialize(m))
        assert type(clone) is type(m) and clone.get_config() == m.get_config()


# --------------------------------------------------------------------------- binary (1-channel) models


def binary_confusion(t, p, threshold):
    """2 x 2 confusion matrix by hand: truth 0 / 1 (anything else ignored), prediction p >= threshold."""
    t, p = np.asarray(t, np.float64).ravel(), np.asarray(p, np.float64).ravel()
    ok = (t == 0) | (t == 1)
    fg_pred = p >= threshold
    return np.array([[np.sum(ok & (t == 0) & ~fg_pred), np.sum(ok & (t == 0) & fg_pred)],
                     [np.sum(ok & (t == 1) & ~fg_pred), np.sum(ok & (t == 1) & fg_pred)]])


def binary_case(seed, shape=(3, 5, 6, 1)):
    rng = np.random.default_rng(seed)
    t = (rng.random(shape) < 0.35).astype(np.float32)
    odd = rng.random(shape)
    t[odd < 0.1] = 255.0
    t[(odd >= 0.1) & (odd < 0.15)] = -1.0
    t[(odd >= 0.15) & (odd < 0.2)] = 0.5  # soft target: ignored by the metrics
    p = np.clip(np.where(t == 1, 0.65, 0.35) + rng.normal(0, 0.25, shape), 0, 1).astype(np.float32)
    return t, p


def test_binary_quarter_foreground_with_an_all_foreground_prediction():
    t = np.zeros((1, 4, 4, 1), np.float32)
    t[0, :2, :2] = 1.0
    p = np.ones_like(t)
    got = {m.name: (m.update_state(t, p), float(m.result()))[1] for m in M.binary_metrics()}
    # foreground: TP 4, FP 12, FN 0; background: TP 0, FN 12
    assert got == pytest.approx({"pixel_accuracy": 0.25, "iou_foreground": 0.25, "dice_foreground": 0.4,
                                 "precision_foreground": 0.25, "recall_foreground": 1.0, "miou": 0.125})
    # empty truth: the foreground predicted everywhere scores 0, not 1
    iou = M.IoU(2, class_id=1)
    iou.update_state(np.zeros_like(t), p)
    assert float(iou.result()) == 0.0
    # nothing anywhere: foreground absent from both, its IoU undefined; every pixel right
    iou, acc = M.IoU(2, class_id=1), M.PixelAccuracy(2)
    for m in (iou, acc):
        m.update_state(np.zeros_like(t), np.zeros_like(t))
    assert np.isnan(float(iou.result())) and float(acc.result()) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
@pytest.mark.parametrize("target", ["channel", "sparse", "sparse_int"])
def test_binary_metrics_match_a_hand_made_confusion_matrix(seed, threshold, target):
    t, p = binary_case(seed)
    cm = binary_confusion(t, p, threshold)
    assert cm.sum() < t.size and cm[1, 1] > 0 and cm[0, 1] > 0  # ignored pixels and both kinds of error
    s = M.scores(cm, ["background", "foreground"])
    y = {"channel": t, "sparse": t[..., 0],
         "sparse_int": np.where((t == 0) | (t == 1), t, 255).astype(np.int32)[..., 0]}[target]
    metrics = M.segmentation_metrics(2, ["background", "foreground"], per_class=True, binary=True,
                                     threshold=threshold)
    names = [m.name for m in metrics]
    assert len(names) == len(set(names)) and "iou_background" in names
    expected = {**{k: s[k] for k in ("pixel_accuracy", "mean_accuracy", "miou", "fw_iou", "mean_dice",
                                      "mean_precision", "mean_recall")},
                "iou_foreground": s["iou"]["foreground"], "dice_foreground": s["dice"]["foreground"],
                "precision_foreground": s["precision"]["foreground"],
                "recall_foreground": s["recall"]["foreground"], "iou_background": s["iou"]["background"]}
    assert set(names) == set(expected)
    for m in metrics:
        m.update_state(y, p)
        np.testing.assert_array_equal(m.matrix.numpy(), cm)
        assert float(m.result()) == pytest.approx(expected[m.name], abs=1e-6), m.name
    # the NumPy path for reports gives the same matrix
    truth = np.where((t == 0) | (t == 1), t, -1).astype(np.int64)[..., 0]
    np.testing.assert_array_equal(M.confusion_matrix(truth, M.binary_labels(p, threshold), 2), cm)


def test_binary_metrics_accumulate_exactly_over_batches():
    t, p = binary_case(7, shape=(6, 5, 6, 1))
    for whole, split in zip(M.segmentation_metrics(2, binary=True, threshold=0.4),
                            M.segmentation_metrics(2, binary=True, threshold=0.4)):
        whole.update_state(t, p)
        split.update_state(t[:2], p[:2])
        split.update_state(t[2:], p[2:])
        np.testing.assert_array_equal(split.matrix.numpy(), whole.matrix.numpy())
        assert float(split.result()) == float(whole.result()), whole.name
    iou = M.IoU(2, 1)
    iou.update_state(t[:1], p[:1])
    first = float(iou.result())
    iou.update_state(t[1:], p[1:])
    assert float(iou.result()) != first  # the second batch counts


def test_binary_labels():
    p = np.array([[[[0.2], [0.5]], [[0.7], [0.49]]]], np.float32)
    np.testing.assert_array_equal(M.binary_labels(p), [[[0, 1], [1, 0]]])
    np.testing.assert_array_equal(M.binary_labels(p[0], threshold=0.6), [[0, 0], [1, 0]])
    np.testing.assert_array_equal(M.binary_labels(p[0, ..., 0], threshold=0.2), [[1, 1], [1, 1]])
    assert M.binary_labels(p).dtype == np.int64
    with pytest.raises(KsegError, match="1-channel foreground probabilities, got 3 channels"):
        M.binary_labels(np.zeros((1, 2, 2, 3)))
    with pytest.raises(KsegError, match="threshold 1.5 is not a probability"):
        M.binary_labels(p, threshold=1.5)


def test_binary_metric_errors():
    p = np.full((1, 2, 2, 1), 0.7, np.float32)
    with pytest.raises(KsegError, match="metric for 3 classes got 1-channel predictions .* num_classes=2"):
        M.MeanIoU(3).update_state(np.zeros((1, 2, 2, 1)), p)
    with pytest.raises(KsegError, match="1-channel predictions but 3-channel targets"):
        M.MeanIoU(2).update_state(np.zeros((1, 2, 2, 3)), p)
    with pytest.raises(KsegError, match="binary metrics take num_classes=2"):
        M.segmentation_metrics(3, binary=True)
    with pytest.raises(KsegError, match="threshold -0.1 is not a probability"):
        M.IoU(2, 1, threshold=-0.1)
    # a 2-channel one-hot target with a 1-channel prediction is read as (background, foreground)
    m = M.IoU(2, 1)
    m.update_state(np.array([[[[1, 0], [0, 1]], [[0, 1], [0, 0]]]], np.float32), p)
    assert float(m.result()) == pytest.approx(2 / 3)


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_binary_model_with_threshold_saves_and_loads(tmp_path):
    from kseg import losses

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs))
    metrics = M.binary_metrics(threshold=0.3)
    model.compile(optimizer="adam", loss=losses.get("bce+dice"), metrics=metrics)
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    y = (rng.random((4, 8, 8, 1)) < 0.4).astype(np.float32)
    y[:, 0] = 255.0
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    cm = binary_confusion(y, model.predict(x, verbose=0), 0.3)
    assert before["iou_foreground"] == pytest.approx(cm[1, 1] / (cm[1, 1] + cm[0, 1] + cm[1, 0]), abs=1e-6)
    at_half = binary_confusion(y, model.predict(x, verbose=0), 0.5)
    assert at_half[1, 1] / (at_half[1, 1] + at_half[0, 1] + at_half[1, 0]) != pytest.approx(
        before["iou_foreground"], abs=1e-3)  # so a threshold lost on loading would show
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    after = again.evaluate(x, y, verbose=0, return_dict=True)
    assert set(after) == set(before) >= {"loss", "iou_foreground", "dice_foreground", "miou"}
    for k in before:
        assert after[k] == pytest.approx(before[k], abs=1e-6), k
    for m in metrics:
        clone = keras.metrics.deserialize(keras.metrics.serialize(m))
        assert type(clone) is type(m) and clone.get_config() == m.get_config()
        assert clone.threshold == 0.3 and m.get_config()["threshold"] == 0.3
    # a metric saved before thresholds existed (no "threshold" key) loads with 0.5
    cfg = {k: v for k, v in M.IoU(2, 1).get_config().items() if k != "threshold"}
    assert M.IoU.from_config(cfg).threshold == 0.5
