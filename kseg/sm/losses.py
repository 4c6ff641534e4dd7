"""segmentation_models' losses (``sm.losses``), computed by :mod:`kseg.losses`."""

from __future__ import annotations

from kseg import losses as _losses


def _dice(**kw):
    # segmentation_models averages Dice over all classes with a tiny smooth
    return _losses.DiceLoss(smooth=kw.pop("smooth", 1e-5), classes="all", **kw)


def DiceLoss(beta=1, class_weights=None, class_indexes=None, per_image=False, smooth=1e-5):
    return _losses.DiceLoss(smooth=smooth, classes="all", class_weights=class_weights)


def CategoricalFocalLoss(alpha=0.25, gamma=2.0):
    return _losses.FocalLoss(alpha=alpha, gamma=gamma)


def CategoricalCELoss(class_weights=None, class_indexes=None):
    return _losses.CategoricalCrossentropy(class_weights=class_weights)


dice_loss = _dice()
categorical_focal_loss = _losses.FocalLoss()
categorical_crossentropy = _losses.CategoricalCrossentropy()
categorical_focal_dice_loss = _dice() + _losses.FocalLoss()
cce_dice_loss = _losses.CategoricalCrossentropy() + _dice()
