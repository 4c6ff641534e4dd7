"""Segmentation metrics from one confusion matrix over the whole evaluation.

The Keras metrics here accumulate a C x C confusion matrix (rows: truth,
columns: prediction) across every batch of an epoch or evaluation, and compute
their score from it at the end: the result over a set equals the result on the
set as one batch, never an average of per-batch values. Pixels whose one-hot
target is an all-zero row (or whose sparse target is negative or >= C, e.g.
255) are ignored.

:func:`confusion_matrix` and :func:`scores` do the same in NumPy for reports.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _labels(y_true, y_pred, num_classes):
    """Flattened (true, pred, valid) from one-hot or sparse targets and probabilities."""
    pred = ops.argmax(y_pred, axis=-1)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes > 1:
        true = ops.argmax(y_true, axis=-1)
        valid = ops.max(y_true, axis=-1) > 0
    else:
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, -1)
        true = ops.cast(y_true, "int32")
        valid = (true >= 0) & (true < num_classes)
    true = ops.reshape(ops.cast(true, "int32"), (-1,))
    pred = ops.reshape(ops.cast(pred, "int32"), (-1,))
    valid = ops.reshape(valid, (-1,))
    return true, pred, valid


class ConfusionMatrixMetric(keras.metrics.Metric):
    """Base: accumulates the confusion matrix; subclasses turn it into a score."""

    def __init__(self, num_classes: int, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.matrix = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                        dtype="int64", name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        c = self.num_classes
        true, pred, valid = _labels(y_true, y_pred, c)
        idx = ops.where(valid, true * c + pred, c * c)
        counts = ops.bincount(idx, minlength=c * c + 1)[: c * c]
        self.matrix.assign_add(ops.cast(ops.reshape(counts, (c, c)), "int64"))

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.num_classes, self.num_classes), "int64"))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}

    def _cm(self):
        return ops.cast(self.matrix, "float32")


def _iou_terms(cm):
    tp = ops.diagonal(cm)
    truth = ops.sum(cm, axis=1)
    pred = ops.sum(cm, axis=0)
    union = truth + pred - tp
    return tp, truth, pred, union


@keras.saving.register_keras_serializable(package="kseg")
class MeanIoU(ConfusionMatrixMetric):
    """mIoU: mean over classes present (in truth or prediction) of TP / (TP + FP + FN)."""

    def __init__(self, num_classes, name="miou", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        tp, _, _, union = _iou_terms(self._cm())
        present = ops.cast(union > 0, "float32")
        iou = tp / ops.maximum(union, 1.0)
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class PixelAccuracy(ConfusionMatrixMetric):
    """Pixel accuracy: correctly labelled valid pixels / valid pixels."""

    def __init__(self, num_classes, name="pixel_accuracy", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        cm = self._cm()
        return ops.sum(ops.diagonal(cm)) / ops.maximum(ops.sum(cm), 1.0)


# --------------------------------------------------------------------------- NumPy


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """C x C int64 confusion matrix of two label maps (rows truth); true ids < 0 or >= C are ignored."""
    t = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(y_pred).ravel().astype(np.int64)
    ok = (t >= 0) & (t < num_classes)
    return np.bincount(t[ok] * num_classes + p[ok], minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(cm, class_names=None) -> dict:
    """Scores from a confusion matrix: pixel accuracy, mean class accuracy, IoU per class, mIoU,
    frequency-weighted IoU and Dice per class and mean. A class absent from both truth and
    prediction has ``None`` for its IoU and Dice and is left out of the means."""
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    tp = np.diag(cm)
    truth, pred = cm.sum(1), cm.sum(0)
    union = truth + pred - tp
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / union, np.nan)
        dice = np.where(present, 2 * tp / (truth + pred), np.nan)
        acc = np.where(truth > 0, tp / truth, np.nan)
    total = cm.sum()
    freq = truth / total if total else np.zeros(c)
    fw = float(np.nansum(freq * np.nan_to_num(iou))) if total else float("nan")

    def named(v):
        return {n: (None if np.isnan(x) else float(x)) for n, x in zip(names, v)}

    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_accuracy": float(np.nanmean(acc)) if (truth > 0).any() else float("nan"),
        "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "fw_iou": fw,
        "mean_dice": float(np.nanmean(dice)) if present.any() else float("nan"),
        "iou": named(iou),
        "dice": named(dice),
        "accuracy": named(acc),
        "pixels": int(total),
        "absent": [n for n, p in zip(names, present) if not p],
    }
