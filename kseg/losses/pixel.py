"""Per-pixel losses: cross-entropy, focal, Lovasz-softmax, and the binary-only losses."""

from __future__ import annotations

import keras
from keras import ops

from kseg.losses.base import EPSILON, SegmentationLoss, _is_binary, _log_probs, _prepare, _require_binary
from kseg.losses.binary import _binary_crossentropy, _binary_focal, _lovasz_hinge
from kseg.losses.region import _class_mean


@keras.saving.register_keras_serializable(package="kseg")
class CategoricalCrossentropy(SegmentationLoss):
    """Mean over valid pixels of ``-sum_c w_c y_c log p_c``; on a binary output the binary
    cross-entropy (:class:`BinaryCrossentropy`)."""

    def call(self, y_true, y_pred):
        if _is_binary(self, y_true, y_pred):
            return _binary_crossentropy(self, y_true, y_pred)
        y_true, probs, valid = _prepare(y_true, y_pred, self.from_logits)
        ce = -y_true * _log_probs(y_pred, probs, self.from_logits)
        w = self._weights(ops.shape(y_true)[-1])
        if w is not None:
            ce = ce * w
        return ops.sum(ce) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class FocalLoss(SegmentationLoss):
    """Categorical focal loss (Lin et al. 2017): mean over valid pixels of
    ``-sum_c alpha_c y_c (1 - p_c)^gamma log p_c``. ``alpha`` is a number or a
    list per class (segmentation_models uses 0.25 and gamma 2). On a binary output it is
    the binary focal loss (:class:`BinaryFocalLoss`)."""

    def __init__(self, gamma: float = 2.0, alpha=0.25, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.alpha = alpha if isinstance(alpha, (int, float)) else [float(a) for a in alpha]

    def call(self, y_true, y_pred):
        if _is_binary(self, y_true, y_pred):
            return _binary_focal(self, y_true, y_pred)
        y_true, probs, valid = _prepare(y_true, y_pred, self.from_logits)
        log_p = _log_probs(y_pred, probs, self.from_logits)
        alpha = ops.convert_to_tensor(self.alpha, "float32")
        # (1 - p)^gamma kept away from 0^gamma, whose gradient is infinite for gamma < 1
        modulation = ops.power(ops.maximum(1.0 - ops.exp(log_p), EPSILON), self.gamma)
        loss = -alpha * y_true * modulation * log_p
        w = self._weights(ops.shape(y_true)[-1])
        if w is not None:
            loss = loss * w
        return ops.sum(loss) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="kseg")
class LovaszSoftmaxLoss(SegmentationLoss):
    """Lovasz-Softmax loss (Berman et al. 2018): per class, the Lovasz extension of
    the Jaccard loss evaluated at the pixel errors ``e_i = |t_ic - p_ic|``:
    ``sum_i e_(i) g_i`` with the errors sorted in decreasing order and ``g`` the
    increments of ``1 - IoU`` along that order. Equals ``1 - IoU_c`` for hard
    predictions. Computed over all valid pixels of the batch, averaged over the
    classes present (``classes="present"``) or all classes, with ``class_weights``.
    On a binary output it is the Lovasz hinge (:class:`LovaszHingeLoss`).
    """

    def __init__(self, classes: str = "present", **kwargs):
        super().__init__(**kwargs)
        if classes not in ("present", "all"):
            raise ValueError("classes must be 'present' or 'all'")
        self.classes = classes

    def call(self, y_true, y_pred):
        if _is_binary(self, y_true, y_pred):
            return _lovasz_hinge(self, y_true, y_pred)
        y_true, y_pred, valid = _prepare(y_true, y_pred, self.from_logits)
        c = y_true.shape[-1]
        # ignored pixels get error 0: sorted last, they change no term of the sum
        t = ops.transpose(ops.reshape(y_true, (-1, c)))
        e = ops.transpose(ops.reshape(ops.abs(y_true - y_pred) * valid, (-1, c)))
        order = ops.argsort(-e, axis=-1)
        e_sorted = ops.take_along_axis(e, order, axis=-1)
        t_sorted = ops.stop_gradient(ops.take_along_axis(t, order, axis=-1))
        support = ops.sum(t, axis=-1, keepdims=True)
        inter = support - ops.cumsum(t_sorted, axis=-1)
        union = support + ops.cumsum(1.0 - t_sorted, axis=-1)
        jac = 1.0 - inter / ops.maximum(union, 1.0)
        grad = ops.concatenate([jac[:, :1], jac[:, 1:] - jac[:, :-1]], axis=-1)
        per_class = ops.sum(e_sorted * grad, axis=-1)
        return _class_mean(self, per_class, support[:, 0])

    def get_config(self):
        return {**super().get_config(), "classes": self.classes}


@keras.saving.register_keras_serializable(package="kseg")
class BinaryCrossentropy(SegmentationLoss):
    """Binary cross-entropy of a 1-channel output: mean over valid pixels of
    ``-w_t (t log p + (1 - t) log (1 - p))`` with ``p`` the foreground probability
    (the sigmoid of the logits with ``from_logits=True``, computed by a log-sigmoid)
    and ``w_t`` from ``class_weights`` (background, foreground) if given."""

    def call(self, y_true, y_pred):
        _require_binary(self, y_true, y_pred)
        return _binary_crossentropy(self, y_true, y_pred)


@keras.saving.register_keras_serializable(package="kseg")
class BinaryFocalLoss(FocalLoss):
    """Binary focal loss (Lin et al. 2017, segmentation_models' ``BinaryFocalLoss``) of a
    1-channel output: mean over valid pixels of
    ``-alpha t (1 - p)^gamma log p - (1 - alpha) (1 - t) p^gamma log (1 - p)``.
    ``alpha`` (default 0.25) weighs the foreground; two values give (background, foreground)."""

    def call(self, y_true, y_pred):
        _require_binary(self, y_true, y_pred)
        return _binary_focal(self, y_true, y_pred)


@keras.saving.register_keras_serializable(package="kseg")
class LovaszHingeLoss(SegmentationLoss):
    """Lovasz hinge (Berman et al. 2018) of a 1-channel output: the Lovasz extension of
    the foreground's Jaccard loss evaluated at the hinge errors ``max(0, 1 - s_i z_i)``,
    ``z`` the logits (the logit of the clipped probability when ``from_logits=False``)
    and ``s = 2 t - 1``. Computed over all valid pixels of the batch."""

    def call(self, y_true, y_pred):
        _require_binary(self, y_true, y_pred)
        return _lovasz_hinge(self, y_true, y_pred)
