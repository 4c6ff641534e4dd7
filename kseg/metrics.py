"""Segmentation metrics from one confusion matrix over the whole evaluation.

The Keras metrics here accumulate a C x C confusion matrix (rows: truth,
columns: prediction) across every batch of an epoch or evaluation, and compute
their score from it at the end: the result over a set equals the result on the
set as one batch, never an average of per-batch values. Pixels whose one-hot
target is an all-zero row (or whose sparse target is negative or >= C, e.g.
255) are ignored.

Metrics (``class_id=k`` gives one class's score instead of the mean):

- :class:`PixelAccuracy` ``pixel_accuracy``  sum_c TP_c / N
- :class:`MeanClassAccuracy` ``mean_accuracy``  mean over classes in the truth of TP_c / T_c
- :class:`MeanIoU` ``miou``, :class:`IoU`  TP / (TP + FP + FN)
- :class:`FrequencyWeightedIoU` ``fw_iou``  sum_c (T_c / N) IoU_c (FCN paper)
- :class:`DiceScore` (= :data:`F1Score`) ``mean_dice``  2 TP / (2 TP + FP + FN)
- :class:`Precision` ``mean_precision``  TP / (TP + FP);  :class:`Recall` ``mean_recall``  TP / (TP + FN)

A class absent from both truth and prediction is left out of every mean (and a
per-class metric of such a class is NaN). :func:`segmentation_metrics` returns
them all for ``compile``. :func:`confusion_matrix` and :func:`scores` do the same
in NumPy for reports.

Binary models (one output channel, the foreground probability ``p``): build the
metrics with ``num_classes=2`` (class 0 background, class 1 foreground). The
predicted class of a pixel is ``p >= threshold`` (constructor argument
``threshold``, default 0.5, saved with the metric); targets are 1-channel or
sparse maps of 0 / 1, and any other value (255, -1, a soft value) is ignored;
the confusion matrix is 2 x 2. The headline score is the foreground IoU,
``IoU(2, class_id=1)``. :func:`binary_metrics` returns the usual binary set
(pixel accuracy, foreground IoU, Dice, precision and recall, mIoU), and
``segmentation_metrics(2, binary=True)`` the full set plus the foreground scores.
:func:`binary_labels` turns a probability map into class ids in NumPy.
A 1-channel prediction with ``num_classes`` other than 2 raises
:class:`kseg.errors.KsegError`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kseg.errors import KsegError
from kseg.labels import binary_hard_valid, one_hot_valid



def _labels(y_true, y_pred, num_classes, threshold=0.5):
    """Flattened (true, pred, valid) from one-hot or sparse targets and probabilities
    (for a 1-channel ``y_pred``: the foreground probability, class ``p >= threshold``)."""
    if y_pred.shape[-1] == 1:
        return _binary_labels(y_true, y_pred, num_classes, threshold)
    pred = ops.argmax(y_pred, axis=-1)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes > 1:
        true = ops.argmax(y_true, axis=-1)
        valid = one_hot_valid(y_true)
    else:
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, -1)
        true = ops.cast(y_true, "int32")
        valid = (true >= 0) & (true < num_classes)
    true = ops.reshape(ops.cast(true, "int32"), (-1,))
    pred = ops.reshape(ops.cast(pred, "int32"), (-1,))
    valid = ops.reshape(valid, (-1,))
    return true, pred, valid


def _binary_labels(y_true, y_pred, num_classes, threshold):
    if num_classes != 2:
        raise KsegError(f"a metric for {num_classes} classes got 1-channel predictions (a binary model): "
                        "build the metrics of a binary model with num_classes=2 (background, foreground)")
    pred = ops.cast(ops.cast(y_pred[..., 0], "float32") >= threshold, "int32")
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 2:  # one-hot (background, foreground)
        true = ops.argmax(y_true, axis=-1)
        valid = one_hot_valid(y_true)
    else:
        if len(y_true.shape) == len(y_pred.shape):
            if y_true.shape[-1] not in (1, None):
                raise KsegError(f"a binary metric got 1-channel predictions but {y_true.shape[-1]}-channel "
                                "targets: give 1-channel targets (0 background, 1 foreground)")
            y_true = ops.squeeze(y_true, -1)
        t = ops.cast(y_true, "float32")
        valid = binary_hard_valid(t)  # 255, -1 and soft values are ignored
        true = ops.cast(ops.where(valid, t, 0.0), "int32")
    return (ops.reshape(ops.cast(true, "int32"), (-1,)), ops.reshape(pred, (-1,)),
            ops.reshape(valid, (-1,)))


def _check_threshold(threshold):
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise KsegError(f"threshold {threshold} is not a probability: give a value in [0, 1]")
    return threshold


class ConfusionMatrixMetric(keras.metrics.Metric):
    """Base: accumulates the confusion matrix; subclasses turn it into a score.

    ``threshold`` applies to 1-channel predictions (a binary model, ``num_classes=2``):
    a pixel is foreground when its probability is ``>= threshold``.
    """

    def __init__(self, num_classes: int, name=None, dtype=None, threshold: float = 0.5):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.threshold = _check_threshold(threshold)
        self.matrix = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                        dtype="int64", name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        c = self.num_classes
        true, pred, valid = _labels(y_true, y_pred, c, self.threshold)
        idx = ops.where(valid, true * c + pred, c * c)
        counts = ops.bincount(idx, minlength=c * c + 1)[: c * c]
        self.matrix.assign_add(ops.cast(ops.reshape(counts, (c, c)), "int64"))

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.num_classes, self.num_classes), "int64"))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype,
                "threshold": self.threshold}

    def _cm(self):
        return ops.cast(self.matrix, "float32")


def _iou_terms(cm):
    tp = ops.diagonal(cm)
    truth = ops.sum(cm, axis=1)
    pred = ops.sum(cm, axis=0)
    union = truth + pred - tp
    return tp, truth, pred, union


def _ratio(num, den):
    """num / den where den > 0, else 0 (an undefined ratio of a present class counts as 0)."""
    return ops.where(den > 0, num / ops.maximum(den, 1.0), 0.0)


class ClassScoreMetric(ConfusionMatrixMetric):
    """Base of the per-class scores (IoU, Dice, precision, recall).

    With ``class_id=None`` the result is the mean over the classes present in the
    truth or the prediction (a class absent from both is left out); with
    ``class_id=k`` it is class ``k``'s score, NaN when ``k`` is absent from both.
    """

    prefix = ""

    def __init__(self, num_classes, class_id=None, name=None, dtype=None, threshold=0.5):
        if class_id is not None and not 0 <= int(class_id) < int(num_classes):
            raise ValueError(f"class_id {class_id} out of range for {num_classes} classes")
        if name is None:
            name = f"mean_{self.prefix}" if class_id is None else f"{self.prefix}_{class_id}"
        super().__init__(num_classes, name=name, dtype=dtype, threshold=threshold)
        self.class_id = None if class_id is None else int(class_id)

    def per_class(self, tp, truth, pred, union):
        raise NotImplementedError

    def result(self):
        tp, truth, pred, union = _iou_terms(self._cm())
        score = self.per_class(tp, truth, pred, union)
        present = union > 0
        if self.class_id is not None:
            return ops.where(present[self.class_id], score[self.class_id], float("nan"))
        present = ops.cast(present, "float32")
        return ops.sum(score * present) / ops.maximum(ops.sum(present), 1.0)

    def get_config(self):
        return {**super().get_config(), "class_id": self.class_id}


@keras.saving.register_keras_serializable(package="kseg")
class IoU(ClassScoreMetric):
    """Intersection over union of one class (``class_id``) or their mean: TP / (TP + FP + FN)."""

    prefix = "iou"

    def per_class(self, tp, truth, pred, union):
        return _ratio(tp, union)


@keras.saving.register_keras_serializable(package="kseg")
class MeanIoU(IoU):
    """mIoU: mean over classes present (in truth or prediction) of TP / (TP + FP + FN)."""

    def __init__(self, num_classes, name="miou", dtype=None, class_id=None, threshold=0.5):
        super().__init__(num_classes, class_id=class_id, name=name, dtype=dtype, threshold=threshold)


@keras.saving.register_keras_serializable(package="kseg")
class DiceScore(ClassScoreMetric):
    """Dice = F1 of one class or their mean: 2 TP / (2 TP + FP + FN) = 2 TP / (|truth| + |pred|)."""

    prefix = "dice"

    def per_class(self, tp, truth, pred, union):
        return _ratio(2.0 * tp, truth + pred)


F1Score = DiceScore


@keras.saving.register_keras_serializable(package="kseg")
class Precision(ClassScoreMetric):
    """Precision of one class or their mean: TP / (TP + FP) (0 for a class in the truth only)."""

    prefix = "precision"

    def per_class(self, tp, truth, pred, union):
        return _ratio(tp, pred)


@keras.saving.register_keras_serializable(package="kseg")
class Recall(ClassScoreMetric):
    """Recall of one class or their mean: TP / (TP + FN) (0 for a class in the prediction only)."""

    prefix = "recall"

    def per_class(self, tp, truth, pred, union):
        return _ratio(tp, truth)


@keras.saving.register_keras_serializable(package="kseg")
class PixelAccuracy(ConfusionMatrixMetric):
    """Pixel accuracy: correctly labelled valid pixels / valid pixels."""

    def __init__(self, num_classes, name="pixel_accuracy", dtype=None, threshold=0.5):
        super().__init__(num_classes, name=name, dtype=dtype, threshold=threshold)

    def result(self):
        cm = self._cm()
        return ops.sum(ops.diagonal(cm)) / ops.maximum(ops.sum(cm), 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class MeanClassAccuracy(ConfusionMatrixMetric):
    """Mean class accuracy (FCN): mean over the classes in the truth of TP_c / |truth_c|."""

    def __init__(self, num_classes, name="mean_accuracy", dtype=None, threshold=0.5):
        super().__init__(num_classes, name=name, dtype=dtype, threshold=threshold)

    def result(self):
        tp, truth, _, _ = _iou_terms(self._cm())
        seen = ops.cast(truth > 0, "float32")
        return ops.sum(_ratio(tp, truth) * seen) / ops.maximum(ops.sum(seen), 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class FrequencyWeightedIoU(ConfusionMatrixMetric):
    """Frequency-weighted IoU (FCN): sum_c (|truth_c| / N) IoU_c."""

    def __init__(self, num_classes, name="fw_iou", dtype=None, threshold=0.5):
        super().__init__(num_classes, name=name, dtype=dtype, threshold=threshold)

    def result(self):
        tp, truth, _, union = _iou_terms(self._cm())
        return ops.sum(truth * _ratio(tp, union)) / ops.maximum(ops.sum(truth), 1.0)


def segmentation_metrics(num_classes: int, class_names=None, per_class: bool = False, binary: bool = False,
                         threshold: float = 0.5) -> list:
    """The full set for ``model.compile(metrics=...)``: pixel accuracy, mean class accuracy,
    mIoU, frequency-weighted IoU, mean Dice, precision and recall; with ``per_class=True``
    also IoU per class, named ``iou_<class name>``.

    ``binary=True`` (a 1-channel model; ``num_classes`` must be 2) adds the foreground's
    scores ``iou_foreground``, ``dice_foreground``, ``precision_foreground`` and
    ``recall_foreground``; ``threshold`` is the foreground probability from which a pixel
    counts as foreground. A per-class name equal to one of these is not repeated.
    """
    if binary and int(num_classes) != 2:
        raise KsegError(f"binary metrics take num_classes=2 (background, foreground), not {num_classes}")
    kw = {"threshold": threshold}
    out = [PixelAccuracy(num_classes, **kw), MeanClassAccuracy(num_classes, **kw), MeanIoU(num_classes, **kw),
           FrequencyWeightedIoU(num_classes, **kw), DiceScore(num_classes, **kw), Precision(num_classes, **kw),
           Recall(num_classes, **kw)]
    if binary:
        out += _foreground_metrics(threshold)
    if per_class:
        names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        taken = {m.name for m in out}
        for k in range(num_classes):
            name = "iou_" + "_".join(str(names[k]).split())
            if name not in taken:
                out.append(IoU(num_classes, k, name=name, **kw))
    return out


def _foreground_metrics(threshold):
    return [IoU(2, 1, name="iou_foreground", threshold=threshold),
            DiceScore(2, 1, name="dice_foreground", threshold=threshold),
            Precision(2, 1, name="precision_foreground", threshold=threshold),
            Recall(2, 1, name="recall_foreground", threshold=threshold)]


def binary_metrics(threshold: float = 0.5) -> list:
    """The metrics of a binary model, for ``compile``: ``pixel_accuracy``, ``iou_foreground``
    (the headline score), ``dice_foreground``, ``precision_foreground``, ``recall_foreground``
    (the foreground's) and ``miou`` (mean of background and foreground IoU). A pixel is
    predicted foreground when its probability is ``>= threshold``."""
    fg = _foreground_metrics(threshold)
    return [PixelAccuracy(2, threshold=threshold), *fg, MeanIoU(2, threshold=threshold)]


# --------------------------------------------------------------------------- NumPy


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """C x C int64 confusion matrix of two label maps (rows truth); true ids < 0 or >= C are ignored."""
    t = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(y_pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"truth has {t.size} pixels but prediction {p.size}")
    ok = (t >= 0) & (t < num_classes)
    if ok.any() and (p[ok].min() < 0 or p[ok].max() >= num_classes):
        raise ValueError(f"predicted class ids must lie in [0, {num_classes})")
    return np.bincount(t[ok] * num_classes + p[ok], minlength=num_classes ** 2).reshape(num_classes, num_classes)


def binary_labels(prob, threshold: float = 0.5) -> np.ndarray:
    """Class ids (0 background, 1 foreground) of a binary model's foreground probabilities:
    ``prob >= threshold`` as int64. A trailing channel axis of size 1 ((N, H, W, 1) or
    (H, W, 1)) is dropped; a 4-D array with more channels raises :class:`KsegError`."""
    threshold = _check_threshold(threshold)
    p = np.asarray(prob)
    if p.ndim == 4 and p.shape[-1] != 1:
        raise KsegError(f"binary_labels takes 1-channel foreground probabilities, got {p.shape[-1]} channels")
    if p.ndim >= 3 and p.shape[-1] == 1:
        p = p[..., 0]
    return (p >= threshold).astype(np.int64)


def scores(cm, class_names=None) -> dict:
    """Every score of a confusion matrix (rows truth, columns prediction), as plain Python values.

    Keys: ``pixel_accuracy``; ``mean_accuracy`` (FCN's mean class accuracy, over the
    classes in the truth); ``miou``, ``mean_dice``, ``mean_precision``, ``mean_recall``
    (means over the classes present in truth or prediction); ``fw_iou`` (FCN's
    frequency-weighted IoU); per class ``{name: value}`` dicts ``iou``, ``dice``,
    ``precision``, ``recall``, ``accuracy`` (= recall, ``None`` for a class not in the
    truth), ``support`` (truth pixels) and ``predicted`` (predicted pixels);
    ``pixels``, ``class_names``, ``present`` and ``absent`` (class names). A class absent
    from both truth and prediction has ``None`` for its scores and is left out of the means.
    A present class whose precision or recall is 0/0 (never predicted, or not in the truth)
    scores 0 there. Means over no class are NaN.
    """
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for a {c}x{c} confusion matrix")
    tp = np.diag(cm)
    truth, pred = cm.sum(1), cm.sum(0)
    union = truth + pred - tp
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / union, np.nan)
        dice = np.where(present, 2 * tp / (truth + pred), np.nan)
        precision = np.where(present, np.where(pred > 0, tp / pred, 0.0), np.nan)
        recall = np.where(present, np.where(truth > 0, tp / truth, 0.0), np.nan)
        acc = np.where(truth > 0, tp / truth, np.nan)
    total = cm.sum()
    fw = float(np.sum(truth * np.nan_to_num(iou)) / total) if total else float("nan")

    def mean(v):
        return float(np.nanmean(v)) if not np.isnan(v).all() else float("nan")

    def named(v):
        return {n: (None if np.isnan(x) else float(x)) for n, x in zip(names, v)}

    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_accuracy": mean(acc),
        "miou": mean(iou),
        "fw_iou": fw,
        "mean_dice": mean(dice),
        "mean_precision": mean(precision),
        "mean_recall": mean(recall),
        "iou": named(iou),
        "dice": named(dice),
        "precision": named(precision),
        "recall": named(recall),
        "accuracy": named(acc),
        "support": {n: int(v) for n, v in zip(names, truth)},
        "predicted": {n: int(v) for n, v in zip(names, pred)},
        "pixels": int(total),
        "class_names": names,
        "present": [n for n, p in zip(names, present) if p],
        "absent": [n for n, p in zip(names, present) if not p],
    }
