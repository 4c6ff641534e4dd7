"""Segmentation losses that ignore unknown pixels.

Every loss takes one-hot targets ``y_true`` of shape (N, H, W, C) in which an
ignored pixel is an all-zero row, and probabilities ``y_pred`` of the same shape
(``from_logits=True`` for raw scores). Ignored pixels change nothing: the value
equals the loss computed with those pixels removed. Each loss reduces over the
whole batch (every valid pixel counts once) and returns a scalar.

Losses add and scale like segmentation_models' do::

    loss = kseg.losses.DiceLoss() + 0.5 * kseg.losses.FocalLoss()
"""

from __future__ import annotations

import keras
from keras import ops

from kseg.errors import KsegError

EPSILON = 1e-7


def _prepare(y_true, y_pred, from_logits):
    y_true = ops.cast(y_true, y_pred.dtype if hasattr(y_pred, "dtype") else "float32")
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    if from_logits:
        y_pred = ops.softmax(y_pred, axis=-1)
    valid = ops.cast(ops.sum(y_true, axis=-1, keepdims=True) > 0, "float32")
    return y_true, y_pred, valid


class SegmentationLoss(keras.losses.Loss):
    """Base class: scalar, ignore-aware, composable with ``+`` and ``*``."""

    def __init__(self, from_logits: bool = False, class_weights=None, name=None, **kwargs):
        super().__init__(name=name or _snake(type(self).__name__), **kwargs)
        self.from_logits = from_logits
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def _weights(self, num_classes):
        if self.class_weights is None:
            return None
        if len(self.class_weights) != num_classes:
            raise KsegError(f"{len(self.class_weights)} class weights for {num_classes} classes")
        return ops.convert_to_tensor(self.class_weights, "float32")

    def get_config(self):
        cfg = super().get_config()
        cfg.update(from_logits=self.from_logits, class_weights=self.class_weights)
        return cfg

    def __add__(self, other):
        return SumLoss([self, other])

    def __mul__(self, factor):
        return SumLoss([self], [float(factor)])

    __rmul__ = __mul__


def _snake(name):
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out.replace("_loss", "").replace("cross_entropy", "crossentropy")


@keras.saving.register_keras_serializable(package="kseg")
class CategoricalCrossentropy(SegmentationLoss):
    """Mean over valid pixels of ``-sum_c w_c y_c log p_c``."""

    def call(self, y_true, y_pred):
        y_true, y_pred, valid = _prepare(y_true, y_pred, self.from_logits)
        ce = -y_true * ops.log(ops.clip(y_pred, EPSILON, 1.0))
        w = self._weights(ops.shape(y_true)[-1])
        if w is not None:
            ce = ce * w
        return ops.sum(ce) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class FocalLoss(SegmentationLoss):
    """Categorical focal loss (Lin et al. 2017): mean over valid pixels of
    ``-sum_c alpha_c y_c (1 - p_c)^gamma log p_c``. ``alpha`` is a number or a
    list per class (segmentation_models uses 0.25 and gamma 2)."""

    def __init__(self, gamma: float = 2.0, alpha=0.25, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.alpha = alpha if isinstance(alpha, (int, float)) else [float(a) for a in alpha]

    def call(self, y_true, y_pred):
        y_true, y_pred, valid = _prepare(y_true, y_pred, self.from_logits)
        p = ops.clip(y_pred, EPSILON, 1.0)
        alpha = ops.convert_to_tensor(self.alpha, "float32")
        loss = -alpha * y_true * ops.power(1.0 - p, self.gamma) * ops.log(p)
        w = self._weights(ops.shape(y_true)[-1])
        if w is not None:
            loss = loss * w
        return ops.sum(loss) / ops.maximum(ops.sum(valid), 1.0)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="kseg")
class DiceLoss(SegmentationLoss):
    """Soft Dice loss, ``1 - mean_c (2 |P_c T_c| + s) / (|P_c| + |T_c| + s)``.

    Sums run over every valid pixel of the batch; the mean runs over the classes
    present in ``y_true`` (``classes="present"``, default) or all classes
    (``"all"``), weighted by ``class_weights`` if given. ``smooth`` is ``s``.
    """

    def __init__(self, smooth: float = 1.0, classes: str = "present", **kwargs):
        super().__init__(**kwargs)
        if classes not in ("present", "all"):
            raise ValueError("classes must be 'present' or 'all'")
        self.smooth = float(smooth)
        self.classes = classes

    def per_class(self, y_true, y_pred):
        y_true, y_pred, valid = _prepare(y_true, y_pred, self.from_logits)
        y_pred = y_pred * valid
        axes = tuple(range(len(y_true.shape) - 1))
        inter = ops.sum(y_true * y_pred, axis=axes)
        denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        return (2.0 * inter + self.smooth) / (denom + self.smooth), ops.sum(y_true, axis=axes)

    def call(self, y_true, y_pred):
        score, support = self.per_class(y_true, y_pred)
        weight = ops.cast(support > 0, "float32") if self.classes == "present" else ops.ones_like(score)
        w = self._weights(score.shape[-1])
        if w is not None:
            weight = weight * w
        return 1.0 - ops.sum(score * weight) / ops.maximum(ops.sum(weight), EPSILON)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth, "classes": self.classes}


@keras.saving.register_keras_serializable(package="kseg")
class SumLoss(keras.losses.Loss):
    """A weighted sum of losses: ``sum_i w_i L_i``."""

    def __init__(self, losses, weights=None, name=None, **kwargs):
        losses = [keras.losses.deserialize(lo) if isinstance(lo, dict) else lo for lo in losses]
        flat, flat_w = [], []
        for lo, w in zip(losses, weights or [1.0] * len(losses)):
            if isinstance(lo, SumLoss):  # flatten nested sums
                flat += lo.losses
                flat_w += [w * v for v in lo.weights]
            else:
                flat.append(lo)
                flat_w.append(float(w))
        super().__init__(name=name or "+".join(lo.name for lo in flat), **kwargs)
        self.losses, self.weights = flat, flat_w

    def call(self, y_true, y_pred):
        total = 0.0
        for lo, w in zip(self.losses, self.weights):
            total = total + w * lo.call(y_true, y_pred)
        return total

    def __add__(self, other):
        return SumLoss([self, other])

    def __mul__(self, factor):
        return SumLoss([self], [float(factor)])

    __rmul__ = __mul__

    def get_config(self):
        return {"name": self.name, "losses": [keras.losses.serialize(lo) for lo in self.losses],
                "weights": self.weights}


LOSSES = {
    "ce": CategoricalCrossentropy,
    "dice": DiceLoss,
    "focal": FocalLoss,
}


def get(spec: str, **kwargs) -> keras.losses.Loss:
    """A loss from a name: ``ce``, ``dice``, ``focal``, or a sum such as ``dice+focal``
    or ``dice+0.5*focal``."""
    parts = [p.strip() for p in str(spec).split("+")]
    losses, weights = [], []
    for part in parts:
        w, _, nm = part.rpartition("*")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            weight = None
        if weight is None or nm not in LOSSES:
            raise KsegError(f"unknown loss {spec!r}: use {', '.join(LOSSES)} or a sum such as dice+focal")
        losses.append(LOSSES[nm](**kwargs))
        weights.append(weight)
    if len(losses) == 1 and weights[0] == 1.0:
        return losses[0]
    return SumLoss(losses, weights)
