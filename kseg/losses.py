"""Segmentation losses that ignore unknown pixels.

Every loss takes one-hot targets ``y_true`` of shape (N, H, W, C) in which an
ignored pixel is an all-zero row, and probabilities ``y_pred`` of the same shape
(``from_logits=True`` for raw scores). Ignored pixels change nothing: the value
equals the loss computed with those pixels removed. Each loss reduces over the
whole batch (every valid pixel counts once) and returns a scalar.

Losses add and scale like segmentation_models' do (any weighted sum)::

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
class CategoricalCrossentropy(SegmentationLoss):
    """Mean over valid pixels of ``-sum_c w_c y_c log p_c``."""

    def call(self, y_true, y_pred):
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
    list per class (segmentation_models uses 0.25 and gamma 2)."""

    def __init__(self, gamma: float = 2.0, alpha=0.25, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.alpha = alpha if isinstance(alpha, (int, float)) else [float(a) for a in alpha]

    def call(self, y_true, y_pred):
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


class RegionLoss(SegmentationLoss):
    """Base of the overlap losses (Dice, Jaccard, Tversky, Focal-Tversky).

    Per class ``c`` it sums over every valid pixel of the batch the soft counts
    ``TP_c = sum p_c t_c``, ``FP_c = sum p_c (1 - t_c)``, ``FN_c = sum (1 - p_c) t_c``,
    turns them into a loss per class (:meth:`class_loss`), and averages over the
    classes present in ``y_true`` (``classes="present"``, default) or all classes
    (``"all"``), weighted by ``class_weights`` if given.
    """

    def __init__(self, smooth: float = 1.0, classes: str = "present", **kwargs):
        super().__init__(**kwargs)
        if classes not in ("present", "all"):
            raise ValueError("classes must be 'present' or 'all'")
        self.smooth = float(smooth)
        self.classes = classes

    def counts(self, y_true, y_pred):
        """Soft (TP, FP, FN, support) per class over the valid pixels of the batch."""
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


@keras.saving.register_keras_serializable(package="kseg")
class LovaszSoftmaxLoss(SegmentationLoss):
    """Lovasz-Softmax loss (Berman et al. 2018): per class, the Lovasz extension of
    the Jaccard loss evaluated at the pixel errors ``e_i = |t_ic - p_ic|``:
    ``sum_i e_(i) g_i`` with the errors sorted in decreasing order and ``g`` the
    increments of ``1 - IoU`` along that order. Equals ``1 - IoU_c`` for hard
    predictions. Computed over all valid pixels of the batch, averaged over the
    classes present (``classes="present"``) or all classes, with ``class_weights``.
    """

    def __init__(self, classes: str = "present", **kwargs):
        super().__init__(**kwargs)
        if classes not in ("present", "all"):
            raise ValueError("classes must be 'present' or 'all'")
        self.classes = classes

    def call(self, y_true, y_pred):
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


LOSSES = {
    "ce": CategoricalCrossentropy,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "jaccard": JaccardLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "lovasz": LovaszSoftmaxLoss,
}
ALIASES = {"crossentropy": "ce", "categorical_crossentropy": "ce", "iou": "jaccard",
           "lovasz_softmax": "lovasz", "focaltversky": "focal_tversky"}


def _accepted(cls) -> set:
    """Keyword arguments the constructor of loss class ``cls`` takes."""
    import inspect

    names = {"name", "reduction", "dtype"}
    for klass in cls.__mro__:
        if klass is keras.losses.Loss:
            break
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    return names


def get(spec: str, **kwargs) -> keras.losses.Loss:
    """A loss from a name or a weighted sum of names.

    Names: ``ce``, ``dice``, ``focal``, ``jaccard``, ``tversky``, ``focal_tversky``,
    ``lovasz``; sums such as ``dice+focal`` or ``dice+0.5*focal``. Keyword
    arguments (``from_logits``, ``class_weights``, ``gamma``, ...) go to every
    loss of the sum whose constructor takes them.
    """
    parts = [p.strip() for p in str(spec).replace(" ", "").split("+")]
    losses, weights = [], []
    for part in parts:
        a, _, b = part.rpartition("*")
        nm, w = (b, a) if a else (b, "")
        if a and (_norm(a) in LOSSES or _norm(a) in ALIASES):  # "focal*0.5"
            nm, w = a, b
        nm = _norm(nm)
        nm = ALIASES.get(nm, nm)
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            weight = None
        if weight is None or nm not in LOSSES:
            raise KsegError(f"unknown loss {spec!r}: use {', '.join(LOSSES)} or a weighted sum "
                            "such as dice+0.5*focal")
        cls = LOSSES[nm]
        ok = _accepted(cls)
        losses.append(cls(**{k: v for k, v in kwargs.items() if k in ok}))
        weights.append(weight)
    unused = set(kwargs) - set().union(*(_accepted(type(lo)) for lo in losses))
    if unused:
        raise KsegError(f"loss {spec!r} takes no argument {', '.join(sorted(unused))}")
    if len(losses) == 1 and weights[0] == 1.0:
        return losses[0]
    return SumLoss(losses, weights)


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")
