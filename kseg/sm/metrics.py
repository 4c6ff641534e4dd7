"""segmentation_models' metrics (``sm.metrics``), with segmentation_models 1.0.1's formulas.

Every score is computed on one batch ``(gt, pr)`` of 4-D tensors (channels last, or
channels first when ``keras.config.image_data_format()`` says so):

- per class ``c`` the soft counts over the reduced axes (the whole batch, or each
  image when ``per_image=True``): ``tp = sum(gt * pr)``, ``fp = sum(pr) - tp``,
  ``fn = sum(gt) - tp``;
- the class score, ``smooth`` added to numerator and denominator exactly as written
  below (nothing clamped: ``smooth=1e-11`` scores empty truth against an empty
  prediction 1 and against a non-empty prediction ~0);
- ``per_image``: the scores are averaged over the images first; then multiplied by
  ``class_weights`` (a number or one weight per class) and averaged over the classes.
  A weight is a multiplier, not a weighted mean: weights (2, 0) on scores (a, b) give a.

``class_indexes`` (an int or a list) keeps only those channels, before anything else;
``threshold`` rounds the prediction (``pr > threshold``, strictly) before counting.

- IoU: ``(tp + smooth) / (tp + fp + fn + smooth)``
- F-beta: ``((1 + b^2) tp + smooth) / ((1 + b^2) tp + b^2 fn + fp + smooth)``
- precision: ``(tp + smooth) / (tp + fp + smooth)``; recall: ``(tp + smooth) / (tp + fn + smooth)``

Nothing is ignored on segmentation_models' inputs. One addition for kseg's binary
targets: on a 1-channel target a value outside [0, 1] (kseg's 255, or -1) marks an
ignored pixel, counted in neither ``gt`` nor ``pr`` (segmentation_models has no
meaning for such values, so no result on its inputs changes).

The objects are plain callables returning a scalar, as segmentation_models' are:
``model.compile(metrics=[sm.metrics.iou_score])`` averages them over batches and
logs them under ``metric.name`` (``iou_score``, ``f1-score``, ...).
"""

from __future__ import annotations

import numbers
import types

import keras
from keras import ops

SMOOTH = 1e-5


# ---------------------------------------------------------------- helpers (sm's base/functional.py)

def _channel_axis(rank):
    return 1 if keras.config.image_data_format() == "channels_first" else rank - 1


def _as_float(x):
    x = ops.convert_to_tensor(x)
    return x if x.dtype == "float32" else ops.cast(x, "float32")


def _ignore_mask(gt):
    """For a 1-channel target, 1.0 where the value is in [0, 1], else 0.0; None otherwise."""
    axis = _channel_axis(len(gt.shape))
    if gt.shape[axis] != 1:
        return None
    return ops.cast(ops.logical_and(gt >= 0.0, gt <= 1.0), "float32")


def _gather(x, indexes):
    if indexes is None:
        return x
    if isinstance(indexes, numbers.Integral):
        indexes = [int(indexes)]
    return ops.take(x, ops.convert_to_tensor(list(indexes), "int32"), axis=_channel_axis(len(x.shape)))


def _reduce_axes(rank, per_image):
    channel = _channel_axis(rank)
    axes = [a for a in range(1, rank) if a != channel]
    return axes if per_image else [0] + axes


def _weights(class_weights, rank=1):
    """class_weights as a float32 tensor that broadcasts along the channel axis of a rank-``rank`` tensor."""
    w = ops.convert_to_tensor(class_weights, "float32")
    if len(w.shape) == 1 and rank > 1:
        shape = [1] * rank
        shape[_channel_axis(rank)] = -1
        w = ops.reshape(w, shape)
    return w


def _average(x, per_image, class_weights):
    if per_image:
        x = ops.mean(x, axis=0)
    return ops.mean(x * _weights(class_weights))


def _counts(gt, pr, class_indexes, per_image, threshold):
    """tp, fp, fn per class (per image and class when ``per_image``)."""
    gt, pr = _as_float(gt), _as_float(pr)
    valid = _ignore_mask(gt)
    gt, pr = _gather(gt, class_indexes), _gather(pr, class_indexes)
    if threshold is not None:
        pr = ops.cast(pr > threshold, "float32")
    if valid is not None:
        gt, pr = gt * valid, pr * valid
    axes = _reduce_axes(len(gt.shape), per_image)
    tp = ops.sum(gt * pr, axis=axes)
    fp = ops.sum(pr, axis=axes) - tp
    fn = ops.sum(gt, axis=axes) - tp
    return tp, fp, fn


def _iou_score(gt, pr, class_weights=1., class_indexes=None, smooth=SMOOTH, per_image=False, threshold=None,
               **kwargs):
    """Jaccard index ``(tp + smooth) / (tp + fp + fn + smooth)``, averaged as the module says."""
    tp, fp, fn = _counts(gt, pr, class_indexes, per_image, threshold)
    return _average((tp + smooth) / (tp + fp + fn + smooth), per_image, class_weights)


def _f_score(gt, pr, beta=1, class_weights=1, class_indexes=None, smooth=SMOOTH, per_image=False, threshold=None,
             **kwargs):
    """F-beta ``((1 + b^2) tp + smooth) / ((1 + b^2) tp + b^2 fn + fp + smooth)`` (Dice for beta 1)."""
    tp, fp, fn = _counts(gt, pr, class_indexes, per_image, threshold)
    b2 = float(beta) ** 2
    score = ((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth)
    return _average(score, per_image, class_weights)


def _precision(gt, pr, class_weights=1, class_indexes=None, smooth=SMOOTH, per_image=False, threshold=None,
               **kwargs):
    """Precision ``(tp + smooth) / (tp + fp + smooth)``."""
    tp, fp, _ = _counts(gt, pr, class_indexes, per_image, threshold)
    return _average((tp + smooth) / (tp + fp + smooth), per_image, class_weights)


def _recall(gt, pr, class_weights=1, class_indexes=None, smooth=SMOOTH, per_image=False, threshold=None,
            **kwargs):
    """Recall ``(tp + smooth) / (tp + fn + smooth)``."""
    tp, _, fn = _counts(gt, pr, class_indexes, per_image, threshold)
    return _average((tp + smooth) / (tp + fn + smooth), per_image, class_weights)


# ---------------------------------------------------------------- objects (sm's base/objects.py)

def _plain(value):
    """A config-friendly copy of class_weights / class_indexes (NumPy arrays become lists)."""
    if value is None or isinstance(value, (numbers.Number, str)):
        return value
    return [v.item() if hasattr(v, "item") else v for v in value]


class Metric:
    """Base of the metric objects: a callable ``metric(gt, pr) -> scalar`` with a ``name``.

    ``metric.__name__`` and ``metric.name`` are the name (settable), as segmentation_models'.
    """

    def __init__(self, name=None):
        self._name = name

    @property
    def __name__(self):
        return self.__class__.__name__ if self._name is None else self._name

    @property
    def name(self):
        return self.__name__

    @name.setter
    def name(self, name):
        self._name = name

    def __repr__(self):
        return f"<{self.__class__.__name__} {self.name!r}>"

    def get_config(self):
        return {"name": self._name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _Score(Metric):
    _fn = None

    def __init__(self, class_weights=None, class_indexes=None, threshold=None, per_image=False, smooth=SMOOTH,
                 name=None):
        super().__init__(name=name)
        self.class_weights = class_weights if class_weights is not None else 1
        self.class_indexes = class_indexes
        self.threshold = threshold
        self.per_image = per_image
        self.smooth = smooth

    def _kwargs(self):
        return dict(class_weights=self.class_weights, class_indexes=self.class_indexes, smooth=self.smooth,
                    per_image=self.per_image, threshold=self.threshold)

    def __call__(self, gt, pr):
        return type(self)._fn(gt, pr, **self._kwargs())

    def get_config(self):
        return {**super().get_config(), "class_weights": _plain(self.class_weights),
                "class_indexes": _plain(self.class_indexes), "threshold": self.threshold,
                "per_image": self.per_image, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="kseg.sm")
class IOUScore(_Score):
    """Intersection over union (Jaccard index); default name ``iou_score``."""

    _fn = staticmethod(_iou_score)

    def __init__(self, class_weights=None, class_indexes=None, threshold=None, per_image=False, smooth=SMOOTH,
                 name=None):
        super().__init__(class_weights, class_indexes, threshold, per_image, smooth, name=name or "iou_score")


@keras.saving.register_keras_serializable(package="kseg.sm")
class FScore(_Score):
    """F-beta score (Dice coefficient for ``beta=1``); default name ``f{beta}-score``."""

    def __init__(self, beta=1, class_weights=None, class_indexes=None, threshold=None, per_image=False,
                 smooth=SMOOTH, name=None):
        super().__init__(class_weights, class_indexes, threshold, per_image, smooth,
                         name=name or "f{}-score".format(beta))
        self.beta = beta

    def __call__(self, gt, pr):
        return _f_score(gt, pr, beta=self.beta, **self._kwargs())

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="kseg.sm")
class Precision(_Score):
    """Precision ``tp / (tp + fp)``; default name ``precision``."""

    _fn = staticmethod(_precision)

    def __init__(self, class_weights=None, class_indexes=None, threshold=None, per_image=False, smooth=SMOOTH,
                 name=None):
        super().__init__(class_weights, class_indexes, threshold, per_image, smooth, name=name or "precision")


@keras.saving.register_keras_serializable(package="kseg.sm")
class Recall(_Score):
    """Recall ``tp / (tp + fn)``; default name ``recall``."""

    _fn = staticmethod(_recall)

    def __init__(self, class_weights=None, class_indexes=None, threshold=None, per_image=False, smooth=SMOOTH,
                 name=None):
        super().__init__(class_weights, class_indexes, threshold, per_image, smooth, name=name or "recall")


#: the score functions under segmentation_models' ``base.functional`` names and signatures
#: (``F.iou_score(gt, pr, class_weights=1., class_indexes=None, smooth=SMOOTH, per_image=False, threshold=None)``)
F = types.SimpleNamespace(SMOOTH=SMOOTH, iou_score=_iou_score, f_score=_f_score, precision=_precision,
                          recall=_recall)

# aliases
iou_score = IOUScore()
f1_score = FScore(beta=1)
f2_score = FScore(beta=2)
precision = Precision()
recall = Recall()
