"""segmentation_models compatibility: run the classic tutorial by changing one import.

Replace ``import segmentation_models as sm`` with ``from kseg import sm``; the
names below mean what they mean in segmentation_models 1.0.1:

- ``sm.Unet(backbone_name, input_shape, classes, activation, encoder_weights,
  encoder_freeze, decoder_block_type, decoder_filters, decoder_use_batchnorm)``
- ``sm.get_preprocessing(backbone)``
- ``sm.set_framework(name)`` / ``sm.framework()``
- ``sm.losses``: ``DiceLoss``, ``CategoricalFocalLoss``, ``CategoricalCELoss``,
  ``dice_loss``, ``categorical_focal_loss``, ``categorical_crossentropy``,
  ``categorical_focal_dice_loss``, ``cce_dice_loss``
- ``sm.metrics``: ``IOUScore``, ``FScore``, ``iou_score``, ``f1_score``

One difference, on purpose: kseg models carry their preprocessing inside the
graph (so an exported model takes raw RGB), hence ``get_preprocessing`` returns
a function that only casts to float32 — applying it, as the tutorial does, is
harmless, and so is not applying it.
"""

from __future__ import annotations

import types

import numpy as np

from kseg import losses as _losses
from kseg import metrics as _metrics
from kseg.models import build as _build

_FRAMEWORK = "tf.keras"


def set_framework(name: str) -> None:
    """Accepted for compatibility ("keras" or "tf.keras"); kseg always uses Keras 3."""
    global _FRAMEWORK
    if name not in ("keras", "tf.keras"):
        raise ValueError(f"framework must be 'keras' or 'tf.keras', got {name!r}")
    _FRAMEWORK = name


def framework() -> str:
    return _FRAMEWORK


def get_preprocessing(backbone_name: str):
    """The input preprocessing for ``backbone_name``: a float32 cast (the model normalises itself)."""
    from kseg.models import list_backbones

    if backbone_name not in list_backbones():
        raise ValueError(f"unknown backbone {backbone_name!r}: choose one of {', '.join(list_backbones())}")

    def preprocess_input(x, **kwargs):
        return np.asarray(x, dtype=np.float32)

    return preprocess_input


def Unet(backbone_name="vgg16", input_shape=(None, None, 3), classes=1, activation="sigmoid",
         weights=None, encoder_weights="imagenet", encoder_freeze=False,
         encoder_features="default", decoder_block_type="upsampling",
         decoder_filters=(256, 128, 64, 32, 16), decoder_use_batchnorm=True, **kwargs):
    """segmentation_models' ``Unet`` signature, built by :func:`kseg.models.unet`."""
    if encoder_features != "default":
        raise ValueError("kseg's sm.Unet supports encoder_features='default' only")
    upsampling = {"upsampling": "nearest", "transpose": "transpose"}.get(decoder_block_type)
    if upsampling is None:
        raise ValueError("decoder_block_type must be 'upsampling' or 'transpose'")
    model = _build("unet", backbone=backbone_name, num_classes=classes, input_shape=input_shape,
                   encoder_weights=encoder_weights, encoder_freeze=encoder_freeze, activation=activation,
                   decoder_filters=tuple(decoder_filters), upsampling=upsampling,
                   decoder_batchnorm=decoder_use_batchnorm)
    if weights is not None:
        model.load_weights(weights)
    return model


# --------------------------------------------------------------------------- losses

def _dice(**kw):
    # segmentation_models averages Dice over all classes with a tiny smooth
    return _losses.DiceLoss(smooth=kw.pop("smooth", 1e-5), classes="all", **kw)


losses = types.SimpleNamespace(
    DiceLoss=lambda beta=1, class_weights=None, class_indexes=None, per_image=False, smooth=1e-5:
        _losses.DiceLoss(smooth=smooth, classes="all", class_weights=class_weights),
    CategoricalFocalLoss=lambda alpha=0.25, gamma=2.0: _losses.FocalLoss(alpha=alpha, gamma=gamma),
    CategoricalCELoss=lambda class_weights=None, class_indexes=None:
        _losses.CategoricalCrossentropy(class_weights=class_weights),
    dice_loss=_dice(),
    categorical_focal_loss=_losses.FocalLoss(),
    categorical_crossentropy=_losses.CategoricalCrossentropy(),
    categorical_focal_dice_loss=_dice() + _losses.FocalLoss(),
    cce_dice_loss=_losses.CategoricalCrossentropy() + _dice(),
)


# --------------------------------------------------------------------------- metrics

def _soft_score(beta, threshold, smooth, name):
    """segmentation_models' IoU / F-score: per batch, averaged over classes, ignored pixels masked.

    Like sm's, Keras averages it over batches; for the exact whole-set figure use
    :class:`kseg.metrics.MeanIoU` (one confusion matrix over the whole set).
    """
    from keras import ops

    def score(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        if y_true.shape[-1] == 1:  # binary: 0 background, 1 foreground, anything else ignored
            valid = ops.cast((y_true >= 0.0) & (y_true <= 1.0), "float32")
            y_true = y_true * valid
        else:  # one-hot: an all-zero row is ignored
            valid = ops.cast(ops.sum(y_true, axis=-1, keepdims=True) > 0, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if threshold is not None:
            y_pred = ops.cast(y_pred > threshold, "float32")
        y_pred = y_pred * valid
        axes = tuple(range(len(y_true.shape) - 1))
        tp = ops.sum(y_true * y_pred, axis=axes)
        fp = ops.sum(y_pred, axis=axes) - tp
        fn = ops.sum(y_true, axis=axes) - tp
        if beta is None:  # IoU
            s = (tp + smooth) / (tp + fp + fn + smooth)
        else:
            b2 = beta ** 2
            s = ((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth)
        return ops.mean(s)

    score.__name__ = name
    return score


def IOUScore(class_weights=None, class_indexes=None, threshold=None, per_image=False, smooth=1e-5, name="iou_score"):
    return _soft_score(None, threshold, smooth, name)


def FScore(beta=1, class_weights=None, class_indexes=None, threshold=None, per_image=False, smooth=1e-5,
           name=None):
    return _soft_score(beta, threshold, smooth, name or f"f{beta}-score")


metrics = types.SimpleNamespace(
    IOUScore=IOUScore,
    FScore=FScore,
    iou_score=IOUScore(),
    f1_score=FScore(beta=1, name="f1-score"),
    f2_score=FScore(beta=2, name="f2-score"),
)
