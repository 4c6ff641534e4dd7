"""Segmentation losses that ignore unknown pixels, for multi-class and binary models.

Multi-class: targets ``y_true`` are one-hot (N, H, W, C), an ignored pixel is an
all-zero row; ``y_pred`` holds the softmax probabilities of the same shape
(``from_logits=True`` for raw scores, turned into probabilities by a softmax).

Binary (a model with one output channel): ``y_true`` is (N, H, W, 1) with
0 = background, 1 = foreground, soft values in between allowed, and any value
outside [0, 1] (255, -1) ignored; ``y_pred`` is (N, H, W, 1), the foreground
probability (``from_logits=True``: raw scores, turned into probabilities by a
sigmoid; the cross-entropy terms then use a log-sigmoid that never saturates).
Every loss picks the mode from the static channel count of ``y_pred``, so
``"ce"``, ``"dice"``, ``"focal"``, ``"lovasz"``, ... serve both; on one channel:

- cross-entropy is the binary cross-entropy, focal loss the binary focal loss
  (``alpha`` weighs foreground pixels, ``1 - alpha`` background ones);
- Dice, Jaccard, Tversky and Focal-Tversky measure the foreground alone, from
  soft TP, FP and FN summed over every valid pixel of the batch (as
  segmentation_models does for ``classes=1``): the ``smooth`` term makes an
  empty truth with an empty prediction score perfectly, and an empty truth with
  a non-empty prediction scores badly; ``classes`` has no effect;
- the Lovasz loss is the Lovasz hinge of Berman et al. on the scores (the logit
  of the clipped probability when given probabilities).

``class_weights`` for a binary output has two entries (background, foreground):
the cross-entropy and focal losses weigh each pixel by them; the overlap losses
and the Lovasz hinge, which measure the foreground alone, do not use them.
:class:`BinaryCrossentropy`, :class:`BinaryFocalLoss` and :class:`LovaszHingeLoss`
(``"bce"``, ``"binary_focal"``, ``"lovasz_hinge"``) accept binary outputs only.
Targets with one channel and predictions with several (or the reverse) raise
:class:`kseg.errors.KsegError`.

Ignored pixels change nothing: the value equals the loss computed with those
pixels removed. Each loss reduces over the whole batch (every valid pixel
counts once) and returns a scalar.

Losses add and scale like segmentation_models' do (any weighted sum)::

    loss = kseg.losses.DiceLoss() + 0.5 * kseg.losses.FocalLoss()
"""

from __future__ import annotations

import keras
from keras import ops

from kseg.errors import KsegError
from kseg.labels import binary_valid

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


def _prepare_binary(y_true, y_pred, from_logits):
    """(targets, foreground probabilities, valid mask, log p, log (1 - p)), all (N, H, W, 1) float32.

    Targets outside [0, 1] are ignored (set to 0, valid 0). The logs come from a
    log-sigmoid of the logits, or from probabilities clipped at ``EPSILON``.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    ok = binary_valid(y_true)
    y_true = ops.where(ok, y_true, 0.0)
    valid = ops.cast(ok, "float32")
    if from_logits:
        probs = ops.sigmoid(y_pred)
        log_p, log_q = ops.log_sigmoid(y_pred), ops.log_sigmoid(-y_pred)
    else:
        probs = y_pred
        log_p = ops.log(ops.clip(y_pred, EPSILON, 1.0))
        log_q = ops.log(ops.clip(1.0 - y_pred, EPSILON, 1.0))
    return y_true, probs, valid, log_p, log_q


def _binary_pixel_weights(loss, y_true):
    """Per-pixel weight from two class weights (background, foreground), or None."""
    w = loss._weights(2)
    if w is None:
        return None
    return w[0] * (1.0 - y_true) + w[1] * y_true


def _valid_mean(per_pixel, valid):
    return ops.sum(ops.where(valid > 0, per_pixel, 0.0)) / ops.maximum(ops.sum(valid), 1.0)


def _binary_crossentropy(loss, y_true, y_pred):
    t, _, valid, log_p, log_q = _prepare_binary(y_true, y_pred, loss.from_logits)
    ce = -(t * log_p + (1.0 - t) * log_q)
    w = _binary_pixel_weights(loss, t)
    return _valid_mean(ce if w is None else ce * w, valid)


def _binary_focal(loss, y_true, y_pred):
    t, _, valid, log_p, log_q = _prepare_binary(y_true, y_pred, loss.from_logits)
    if isinstance(loss.alpha, (int, float)):
        alpha_bg, alpha_fg = 1.0 - loss.alpha, float(loss.alpha)
    elif len(loss.alpha) == 2:
        alpha_bg, alpha_fg = loss.alpha
    else:
        raise KsegError(f"loss {loss.name}: {len(loss.alpha)} alpha values for a binary model: give one number "
                        "(the foreground's; the background gets 1 - alpha) or two (background, foreground)")
    # (1 - p)^gamma and p^gamma kept away from 0^gamma, whose gradient is infinite for gamma < 1
    mod_fg = ops.power(ops.maximum(ops.exp(log_q), EPSILON), loss.gamma)
    mod_bg = ops.power(ops.maximum(ops.exp(log_p), EPSILON), loss.gamma)
    focal = -(alpha_fg * t * mod_fg * log_p + alpha_bg * (1.0 - t) * mod_bg * log_q)
    w = _binary_pixel_weights(loss, t)
    return _valid_mean(focal if w is None else focal * w, valid)


def _lovasz_hinge(loss, y_true, y_pred):
    """Lovasz hinge (Berman et al. 2018) over every valid pixel of the batch."""
    loss._weights(2)  # checks the count; the hinge measures the foreground alone
    t, _, valid, log_p, log_q = _prepare_binary(y_true, y_pred, loss.from_logits)
    # the score: the logits, or log p - log (1 - p) of the clipped probability
    logits = ops.cast(y_pred, "float32") if loss.from_logits else log_p - log_q
    signs = 2.0 * t - 1.0
    # ignored pixels get error 0: sorted after every positive error, they change no term of the sum
    errors = ops.reshape(ops.where(valid > 0, ops.relu(1.0 - logits * signs), 0.0), (-1,))
    t = ops.reshape(t, (-1,))
    order = ops.argsort(-errors)
    e_sorted = ops.take(errors, order)
    t_sorted = ops.stop_gradient(ops.take(t, order))
    support = ops.sum(t)
    inter = support - ops.cumsum(t_sorted)
    union = support + ops.cumsum(1.0 - t_sorted)
    jac = 1.0 - inter / ops.maximum(union, EPSILON)
    grad = ops.concatenate([jac[:1], jac[1:] - jac[:-1]], axis=0)
    return ops.sum(e_sorted * grad)


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
    "bce": BinaryCrossentropy,
    "binary_focal": BinaryFocalLoss,
    "lovasz_hinge": LovaszHingeLoss,
}
ALIASES = {"crossentropy": "ce", "categorical_crossentropy": "ce", "iou": "jaccard",
           "lovasz_softmax": "lovasz", "focaltversky": "focal_tversky",
           "binary_crossentropy": "bce", "binary_focal_loss": "binary_focal"}


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
    ``lovasz`` (each also serves a binary, 1-channel output), and the binary-only
    ``bce`` (= ``binary_crossentropy``), ``binary_focal``, ``lovasz_hinge``; sums
    such as ``dice+focal`` or ``dice+0.5*focal``. Keyword arguments (``from_logits``,
    ``class_weights``, ``gamma``, ...) go to every loss of the sum whose constructor
    takes them.
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
