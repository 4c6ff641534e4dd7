"""segmentation_models' losses (``sm.losses``), with segmentation_models 1.0.1's formulas.

Region losses (one batch ``(gt, pr)``, see :mod:`kseg.sm.metrics` for the counting,
``per_image``, ``class_indexes`` and ``class_weights``):

- ``JaccardLoss`` = 1 - IoU score, ``DiceLoss(beta)`` = 1 - F-beta score, on the soft
  prediction (no threshold), ``smooth`` default 1e-5.

Pixel losses, all a plain mean over every element (pixels x channels):

- ``CategoricalCELoss``: ``pr`` rescaled to sum to 1 over the (selected) classes, clipped
  to [eps, 1 - eps], ``-mean(gt * log(pr) * class_weights)`` -- the mean runs over the
  class axis too, so on C one-hot classes it is the usual cross-entropy / C;
- ``CategoricalFocalLoss(alpha=0.25, gamma=2)``: ``-mean(gt * alpha * (1 - pr)^gamma * log(pr))``;
- ``BinaryCELoss``: ``-mean(gt * log(pr + eps) + (1 - gt) * log(1 - pr + eps))``, ``pr``
  clipped to [eps, 1 - eps] first (``tf.keras.backend.binary_crossentropy``);
- ``BinaryFocalLoss(alpha=0.25, gamma=2)``:
  ``-mean(gt * alpha * (1 - pr)^gamma * log(pr) + (1 - gt) * (1 - alpha) * pr^gamma * log(1 - pr))``.

eps is ``keras.config.epsilon()`` (1e-7). Losses compose: ``a + b`` is a loss named
``"<a>_plus_<b>"``, ``0.5 * a`` (or ``a * 0.5``) one named ``"0.5<a>"``; every loss is a
:class:`keras.losses.Loss`, so ``model.compile(loss=...)`` takes it and a compiled model
saves and loads.

On a 1-channel target a value outside [0, 1] (kseg's 255, or -1) marks an ignored pixel:
it counts in no region score and in no mean (segmentation_models has no meaning for such
values, so nothing changes on its inputs).
"""

from __future__ import annotations

import numbers
import types

import keras
from keras import ops

from kseg.sm import metrics as _metrics
from kseg.sm.metrics import _as_float, _channel_axis, _gather, _ignore_mask, _plain, _weights

SMOOTH = 1e-5


# ---------------------------------------------------------------- functions (sm's base/functional.py)

def _mean(x, valid):
    """Mean of ``x`` over all its elements, or over the elements of valid pixels."""
    if valid is None:
        return ops.mean(x)
    valid = ops.broadcast_to(valid, ops.shape(x))
    return ops.sum(x * valid) / ops.maximum(ops.sum(valid), 1.0)


def _prepare(gt, pr, class_indexes=None):
    gt, pr = _as_float(gt), _as_float(pr)
    valid = _ignore_mask(gt)
    if valid is not None:
        gt = gt * valid
    return _gather(gt, class_indexes), _gather(pr, class_indexes), valid


def _categorical_crossentropy(gt, pr, class_weights=1., class_indexes=None, **kwargs):
    gt, pr, valid = _prepare(gt, pr, class_indexes)
    eps = keras.config.epsilon()
    pr = pr / ops.sum(pr, axis=_channel_axis(len(pr.shape)), keepdims=True)
    pr = ops.clip(pr, eps, 1.0 - eps)
    return -_mean(gt * ops.log(pr) * _weights(class_weights, len(gt.shape)), valid)


def _binary_crossentropy(gt, pr, **kwargs):
    gt, pr, valid = _prepare(gt, pr)
    eps = keras.config.epsilon()
    pr = ops.clip(pr, eps, 1.0 - eps)
    return -_mean(gt * ops.log(pr + eps) + (1.0 - gt) * ops.log(1.0 - pr + eps), valid)


def _categorical_focal_loss(gt, pr, gamma=2.0, alpha=0.25, class_indexes=None, **kwargs):
    gt, pr, valid = _prepare(gt, pr, class_indexes)
    eps = keras.config.epsilon()
    pr = ops.clip(pr, eps, 1.0 - eps)
    return _mean(-gt * (alpha * ops.power(1.0 - pr, gamma) * ops.log(pr)), valid)


def _binary_focal_loss(gt, pr, gamma=2.0, alpha=0.25, **kwargs):
    gt, pr, valid = _prepare(gt, pr)
    eps = keras.config.epsilon()
    pr = ops.clip(pr, eps, 1.0 - eps)
    loss_1 = -gt * (alpha * ops.power(1.0 - pr, gamma) * ops.log(pr))
    loss_0 = -(1.0 - gt) * ((1.0 - alpha) * ops.power(pr, gamma) * ops.log(1.0 - pr))
    return _mean(loss_0 + loss_1, valid)


#: every function under segmentation_models' ``base.functional`` names and signatures
F = types.SimpleNamespace(
    SMOOTH=SMOOTH, iou_score=_metrics.F.iou_score, f_score=_metrics.F.f_score, precision=_metrics.F.precision,
    recall=_metrics.F.recall, categorical_crossentropy=_categorical_crossentropy,
    binary_crossentropy=_binary_crossentropy, categorical_focal_loss=_categorical_focal_loss,
    binary_focal_loss=_binary_focal_loss)


# ---------------------------------------------------------------- objects (sm's base/objects.py)

class Loss(keras.losses.Loss):
    """Base of the loss objects: a :class:`keras.losses.Loss` returning a scalar, with a settable
    ``name`` (also ``__name__``), ``+`` another loss and ``*`` a number."""

    def __init__(self, name=None):
        super().__init__(name=name or self.__class__.__name__)

    @property
    def __name__(self):
        return self.name

    def __add__(self, other):
        if isinstance(other, Loss):
            return SumOfLosses(self, other)
        raise ValueError("Loss should be inherited from `Loss` class")

    def __radd__(self, other):
        return self.__add__(other)

    def __mul__(self, value):
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return MultipliedLoss(self, value)
        raise ValueError("a loss can be multiplied by a number only")

    def __rmul__(self, other):
        return self.__mul__(other)

    def __repr__(self):
        return f"<{self.__class__.__name__} {self.name!r}>"

    def _args(self):
        return {}

    def get_config(self):
        return {"name": self.name, **self._args()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        name = config.pop("name", None)
        config.pop("reduction", None)
        config.pop("dtype", None)
        obj = cls(**config)
        if name:
            obj.name = name
        return obj


@keras.saving.register_keras_serializable(package="kseg.sm")
class MultipliedLoss(Loss):
    """``multiplier * loss``, named ``"<multiplier><name>"``."""

    def __init__(self, loss, multiplier):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if len(loss.__name__.split("+")) > 1:
            name = "{}({})".format(multiplier, loss.__name__)
        else:
            name = "{}{}".format(multiplier, loss.__name__)
        super().__init__(name=name)
        self.loss = loss
        self.multiplier = multiplier

    def call(self, gt, pr):
        return self.multiplier * self.loss(gt, pr)

    def _args(self):
        return {"loss": keras.saving.serialize_keras_object(self.loss), "multiplier": self.multiplier}


@keras.saving.register_keras_serializable(package="kseg.sm")
class SumOfLosses(Loss):
    """``l1 + l2``, named ``"<l1>_plus_<l2>"``."""

    def __init__(self, l1, l2):
        l1, l2 = (keras.saving.deserialize_keras_object(x) if isinstance(x, dict) else x for x in (l1, l2))
        super().__init__(name="{}_plus_{}".format(l1.__name__, l2.__name__))
        self.l1 = l1
        self.l2 = l2

    def call(self, gt, pr):
        return self.l1(gt, pr) + self.l2(gt, pr)

    def _args(self):
        return {"l1": keras.saving.serialize_keras_object(self.l1),
                "l2": keras.saving.serialize_keras_object(self.l2)}


@keras.saving.register_keras_serializable(package="kseg.sm")
class JaccardLoss(Loss):
    """``1 - iou_score`` on the soft prediction; name ``jaccard_loss``."""

    def __init__(self, class_weights=None, class_indexes=None, per_image=False, smooth=SMOOTH):
        super().__init__(name="jaccard_loss")
        self.class_weights = class_weights if class_weights is not None else 1
        self.class_indexes = class_indexes
        self.per_image = per_image
        self.smooth = smooth

    def call(self, gt, pr):
        return 1.0 - _metrics.F.iou_score(gt, pr, class_weights=self.class_weights,
                                          class_indexes=self.class_indexes, smooth=self.smooth,
                                          per_image=self.per_image, threshold=None)

    def _args(self):
        return {"class_weights": _plain(self.class_weights), "class_indexes": _plain(self.class_indexes),
                "per_image": self.per_image, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="kseg.sm")
class DiceLoss(Loss):
    """``1 - f_score(beta)`` on the soft prediction; name ``dice_loss``."""

    def __init__(self, beta=1, class_weights=None, class_indexes=None, per_image=False, smooth=SMOOTH):
        super().__init__(name="dice_loss")
        self.beta = beta
        self.class_weights = class_weights if class_weights is not None else 1
        self.class_indexes = class_indexes
        self.per_image = per_image
        self.smooth = smooth

    def call(self, gt, pr):
        return 1.0 - _metrics.F.f_score(gt, pr, beta=self.beta, class_weights=self.class_weights,
                                        class_indexes=self.class_indexes, smooth=self.smooth,
                                        per_image=self.per_image, threshold=None)

    def _args(self):
        return {"beta": self.beta, "class_weights": _plain(self.class_weights),
                "class_indexes": _plain(self.class_indexes), "per_image": self.per_image, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="kseg.sm")
class BinaryCELoss(Loss):
    """Binary cross-entropy, mean over all pixels; name ``binary_crossentropy``."""

    def __init__(self):
        super().__init__(name="binary_crossentropy")

    def call(self, gt, pr):
        return _binary_crossentropy(gt, pr)


@keras.saving.register_keras_serializable(package="kseg.sm")
class CategoricalCELoss(Loss):
    """Categorical cross-entropy, mean over pixels and classes; name ``categorical_crossentropy``."""

    def __init__(self, class_weights=None, class_indexes=None):
        super().__init__(name="categorical_crossentropy")
        self.class_weights = class_weights if class_weights is not None else 1
        self.class_indexes = class_indexes

    def call(self, gt, pr):
        return _categorical_crossentropy(gt, pr, class_weights=self.class_weights, class_indexes=self.class_indexes)

    def _args(self):
        return {"class_weights": _plain(self.class_weights), "class_indexes": _plain(self.class_indexes)}


@keras.saving.register_keras_serializable(package="kseg.sm")
class CategoricalFocalLoss(Loss):
    """Categorical focal loss, mean over pixels and classes; name ``focal_loss``."""

    def __init__(self, alpha=0.25, gamma=2., class_indexes=None):
        super().__init__(name="focal_loss")
        self.alpha = alpha
        self.gamma = gamma
        self.class_indexes = class_indexes

    def call(self, gt, pr):
        return _categorical_focal_loss(gt, pr, alpha=self.alpha, gamma=self.gamma, class_indexes=self.class_indexes)

    def _args(self):
        return {"alpha": self.alpha, "gamma": self.gamma, "class_indexes": _plain(self.class_indexes)}


@keras.saving.register_keras_serializable(package="kseg.sm")
class BinaryFocalLoss(Loss):
    """Binary focal loss, mean over all pixels; name ``binary_focal_loss``."""

    def __init__(self, alpha=0.25, gamma=2.):
        super().__init__(name="binary_focal_loss")
        self.alpha = alpha
        self.gamma = gamma

    def call(self, gt, pr):
        return _binary_focal_loss(gt, pr, alpha=self.alpha, gamma=self.gamma)

    def _args(self):
        return {"alpha": self.alpha, "gamma": self.gamma}


# aliases
jaccard_loss = JaccardLoss()
dice_loss = DiceLoss()

binary_focal_loss = BinaryFocalLoss()
categorical_focal_loss = CategoricalFocalLoss()

binary_crossentropy = BinaryCELoss()
categorical_crossentropy = CategoricalCELoss()

# loss combinations
bce_dice_loss = binary_crossentropy + dice_loss
bce_jaccard_loss = binary_crossentropy + jaccard_loss

cce_dice_loss = categorical_crossentropy + dice_loss
cce_jaccard_loss = categorical_crossentropy + jaccard_loss

binary_focal_dice_loss = binary_focal_loss + dice_loss
binary_focal_jaccard_loss = binary_focal_loss + jaccard_loss

categorical_focal_dice_loss = categorical_focal_loss + dice_loss
categorical_focal_jaccard_loss = categorical_focal_loss + jaccard_loss
