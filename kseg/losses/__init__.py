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

The losses live in :mod:`kseg.losses.base` (the base class, sums),
:mod:`kseg.losses.pixel` (cross-entropy, focal, Lovasz), :mod:`kseg.losses.region`
(Dice, Jaccard, Tversky) and :mod:`kseg.losses.binary` (the 1-channel terms); every
class is registered with Keras as ``kseg>ClassName``.
"""

from __future__ import annotations

import keras

from kseg.errors import KsegError
from kseg.losses.base import EPSILON, SegmentationLoss, SumLoss  # noqa: F401
from kseg.losses.pixel import (BinaryCrossentropy, BinaryFocalLoss, CategoricalCrossentropy, FocalLoss,  # noqa: F401
                               LovaszHingeLoss, LovaszSoftmaxLoss)
from kseg.losses.region import DiceLoss, FocalTverskyLoss, JaccardLoss, RegionLoss, TverskyLoss  # noqa: F401

# Each class names kseg.losses as its module, the module a saved model's config records for it.
for _cls in (SegmentationLoss, SumLoss, CategoricalCrossentropy, FocalLoss, LovaszSoftmaxLoss, BinaryCrossentropy,
             BinaryFocalLoss, LovaszHingeLoss, RegionLoss, DiceLoss, JaccardLoss, TverskyLoss, FocalTverskyLoss):
    _cls.__module__ = __name__
del _cls

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
