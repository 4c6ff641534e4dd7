"""Overlap losses from soft TP, FP and FN: Dice, Jaccard, Tversky, Focal-Tversky."""

from __future__ import annotations

import keras
from keras import ops

from kseg.losses.base import EPSILON, SegmentationLoss, _is_binary, _prepare
from kseg.losses.binary import _prepare_binary


class RegionLoss(SegmentationLoss):
    """Base of the overlap losses (Dice, Jaccard, Tversky, Focal-Tversky).

    Per class ``c`` it sums over every valid pixel of the batch the soft counts
    ``TP_c = sum p_c t_c``, ``FP_c = sum p_c (1 - t_c)``, ``FN_c = sum (1 - p_c) t_c``,
    turns them into a loss per class (:meth:`class_loss`), and averages over the
    classes present in ``y_true`` (``classes="present"``, default) or all classes
    (``"all"``), weighted by ``class_weights`` if given. On a binary output the
    loss is that of the foreground alone.
    """

    def __init__(self, smooth: float = 1.0, classes: str = "present", **kwargs):
        super().__init__(**kwargs)
        if classes not in ("present", "all"):
            raise ValueError("classes must be 'present' or 'all'")
        self.smooth = float(smooth)
        self.classes = classes

    def counts(self, y_true, y_pred):
        """Soft (TP, FP, FN, support) per class over the valid pixels of the batch
        (one entry, the foreground's, for a binary output)."""
        if _is_binary(self, y_true, y_pred):
            self._weights(2)  # checks the count; the foreground alone is measured
            y_true, y_pred, valid, _, _ = _prepare_binary(y_true, y_pred, self.from_logits)
        else:
            y_true, y_pred, valid = _prepare(y_true, y_pred, self.from_logits)
        y_pred = y_pred * valid
        axes = tuple(range(len(y_true.shape) - 1))
        tp = ops.sum(y_true * y_pred, axis=axes)
        support = ops.sum(y_true, axis=axes)
        return tp, ops.sum(y_pred, axis=axes) - tp, support - tp, support

    def class_loss(self, tp, fp, fn):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        tp, fp, fn, support = self.counts(y_true, y_pred)
        if y_pred.shape[-1] == 1:  # binary: the foreground's loss, whether or not it is in the truth
            return self.class_loss(tp, fp, fn)[0]
        return _class_mean(self, self.class_loss(tp, fp, fn), support)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth, "classes": self.classes}


def _class_mean(loss, per_class, support):
    """Mean of a per-class loss over the present (or all) classes, with class weights."""
    weight = ops.cast(support > 0, "float32") if loss.classes == "present" else ops.ones_like(per_class)
    w = loss._weights(per_class.shape[-1])
    if w is not None:
        weight = weight * w
    return ops.sum(per_class * weight) / ops.maximum(ops.sum(weight), EPSILON)


@keras.saving.register_keras_serializable(package="kseg")
class DiceLoss(RegionLoss):
    """Soft Dice loss, ``1 - mean_c (2 |P_c T_c| + s) / (|P_c| + |T_c| + s)``.

    Sums run over every valid pixel of the batch; the mean runs over the classes
    present in ``y_true`` (``classes="present"``, default) or all classes
    (``"all"``), weighted by ``class_weights`` if given. ``smooth`` is ``s``.
    """

    def per_class(self, y_true, y_pred):
        """(Dice score per class, support per class)."""
        tp, fp, fn, support = self.counts(y_true, y_pred)
        return 1.0 - self.class_loss(tp, fp, fn), support

    def class_loss(self, tp, fp, fn):
        return 1.0 - (2.0 * tp + self.smooth) / ops.maximum(2.0 * tp + fp + fn + self.smooth, EPSILON)


@keras.saving.register_keras_serializable(package="kseg")
class JaccardLoss(RegionLoss):
    """Soft IoU (Jaccard) loss, ``1 - mean_c (TP_c + s) / (TP_c + FP_c + FN_c + s)``
    where ``TP + FP + FN = |P| + |T| - |P T|`` is the soft union."""

    def class_loss(self, tp, fp, fn):
        return 1.0 - (tp + self.smooth) / ops.maximum(tp + fp + fn + self.smooth, EPSILON)


@keras.saving.register_keras_serializable(package="kseg")
class TverskyLoss(RegionLoss):
    """Tversky loss (Salehi et al. 2017), ``1 - mean_c TI_c`` with
    ``TI_c = (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)``.

    ``alpha`` weighs false positives, ``beta`` false negatives: ``alpha = beta = 0.5``
    is Dice (with smoothing ``2 s``), ``alpha = beta = 1`` is Jaccard, ``beta > alpha`` favours recall.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def index(self, tp, fp, fn):
        return (tp + self.smooth) / ops.maximum(tp + self.alpha * fp + self.beta * fn + self.smooth, EPSILON)

    def class_loss(self, tp, fp, fn):
        return 1.0 - self.index(tp, fp, fn)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="kseg")
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan 2019), ``mean_c (1 - TI_c)^gamma``.

    ``gamma < 1`` (default 0.75, the paper's ``1/gamma`` with gamma = 4/3) raises
    the loss of classes that are already well segmented less than that of hard ones.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, **kwargs):
        super().__init__(alpha=alpha, beta=beta, **kwargs)
        self.gamma = float(gamma)

    def class_loss(self, tp, fp, fn):
        # keep the base away from 0: d/dx x^gamma is infinite there for gamma < 1
        return ops.power(ops.maximum(1.0 - self.index(tp, fp, fn), EPSILON), self.gamma)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}
