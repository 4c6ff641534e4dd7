"""The base of kseg's losses: target preparation, the binary/multi-class switch, ``+`` and ``*``."""

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


def _is_binary(loss, y_true, y_pred) -> bool:
    """True for a binary (1-channel) prediction; raises when targets and predictions disagree on it."""
    pred_c = y_pred.shape[-1]
    if pred_c == 1 and len(y_true.shape) == len(y_pred.shape) - 1:
        return True  # (N, H, W) maps of 0 / 1
    true_c = y_true.shape[-1] if len(y_true.shape) == len(y_pred.shape) else None
    if pred_c == 1 and true_c not in (1, None):
        raise KsegError(f"loss {loss.name}: the predictions have 1 channel (a binary model) but the targets "
                        f"have {true_c}: a binary model takes 1-channel targets (0 background, 1 foreground)")
    if true_c == 1 and pred_c not in (1, None):
        raise KsegError(f"loss {loss.name}: the targets have 1 channel (binary) but the predictions have "
                        f"{pred_c}: a binary model has 1 output channel (num_classes=1, activation='sigmoid'); "
                        f"a {pred_c}-class model takes one-hot targets with {pred_c} channels")
    return pred_c == 1


def _require_binary(loss, y_true, y_pred):
    if not _is_binary(loss, y_true, y_pred):
        raise KsegError(f"loss {loss.name}: needs a binary model (1 output channel), but the predictions have "
                        f"{y_pred.shape[-1]} channels: use the multi-class loss ('ce', 'focal', 'lovasz')")


def _log_probs(y_pred, probs, from_logits):
    """log p: log-softmax of logits (never saturates), else the log of clipped probabilities."""
    if from_logits:
        return ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
    return ops.log(ops.clip(probs, EPSILON, 1.0))


class _Composable:
    """``a + b``, ``sum([a, b])`` and ``0.5 * a`` build a :class:`SumLoss`."""

    def __add__(self, other):
        return SumLoss([self, other])

    def __radd__(self, other):  # sum([a, b]) starts from 0
        if isinstance(other, (int, float)) and other == 0:
            return self
        return SumLoss([other, self])

    def __mul__(self, factor):
        return SumLoss([self], [float(factor)])

    __rmul__ = __mul__


class SegmentationLoss(_Composable, keras.losses.Loss):
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



def _snake(name):
    out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return out.replace("_loss", "").replace("cross_entropy", "crossentropy")


@keras.saving.register_keras_serializable(package="kseg")
class SumLoss(_Composable, keras.losses.Loss):
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
        super().__init__(name=name or "_plus_".join(lo.name for lo in flat), **kwargs)
        self.losses, self.weights = flat, flat_w

    def call(self, y_true, y_pred):
        total = 0.0
        for lo, w in zip(self.losses, self.weights):
            total = total + w * lo.call(y_true, y_pred)
        return total


    def get_config(self):
        return {"name": self.name, "losses": [keras.losses.serialize(lo) for lo in self.losses],
                "weights": self.weights}
