"""segmentation_models' metrics (``sm.metrics``)."""

from __future__ import annotations


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


iou_score = IOUScore()
f1_score = FScore(beta=1, name="f1-score")
f2_score = FScore(beta=2, name="f2-score")
