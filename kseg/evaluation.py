"""Scoring a model's predictions against label maps: the library under ``kseg.evaluate``.

One confusion matrix over the whole evaluation set gives every score (:mod:`kseg.metrics`):
:func:`evaluate` runs a batch ``predict`` (:func:`kseg.inference.load_predictor`) over
``(images, labels)`` batches and accumulates it, with per-image scores, the worst images and,
optionally, the same after :mod:`kseg.postprocess`. :func:`evaluate_native` scores a Keras model
at each image's own resolution with multi-scale and flip test-time augmentation. A binary model
(one output channel, the foreground probability) predicts foreground where ``p >= threshold``.
:func:`postprocess_options` reads the post-processing options, :func:`change` is what
post-processing changes, :func:`clean` makes a report JSON-safe.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from kseg.errors import KsegError
from kseg.inference import load_predictor, read_image  # noqa: F401  (load_predictor: kseg.evaluate's, as before)


def to_labels(output, num_classes: int, threshold: float = 0.5) -> np.ndarray:
    """Class ids (N, H, W) from a model's scores (N, H, W, C) or ids; checks the class count.

    A binary model's output, the foreground probability (N, H, W, 1) as floats, gives
    ``p >= threshold`` as 0/1 when ``num_classes`` is 2 (background, foreground)."""
    out = np.asarray(output)
    if out.ndim == 4 and out.shape[-1] == 1 and np.issubdtype(out.dtype, np.integer):
        out = out[..., 0]
    if out.ndim == 4 and out.shape[-1] == 1:
        if num_classes != 2:
            raise KsegError(f"the model is binary (one output channel) but the labels have {num_classes} classes: "
                            "score it on two-class (background, foreground) masks")
        from kseg.metrics import binary_labels

        return binary_labels(out, threshold)
    if out.ndim == 4:
        if out.shape[-1] != num_classes:
            raise KsegError(f"the model predicts {out.shape[-1]} classes but the labels have {num_classes}: "
                            "check --mask")
        return np.argmax(out, -1)
    if out.ndim == 3 and np.issubdtype(out.dtype, np.integer):
        return out.astype(np.int64)
    raise KsegError(f"cannot read the model's output of shape {out.shape} as class scores")


def image_scores(truth, pred, num_classes: int, binary: bool = False) -> dict:
    """Pixel accuracy and mIoU of one image (classes present in its truth or prediction); with ``binary``
    also ``foreground_iou`` (class 1; None when neither truth nor prediction holds foreground)."""
    from kseg.metrics import confusion_matrix

    cm = confusion_matrix(truth, pred, num_classes).astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    total = cm.sum()
    out = {"miou": float((tp[present] / union[present]).mean()) if present.any() else None,
           "pixel_accuracy": float(tp.sum() / total) if total else None}
    if binary:
        out["foreground_iou"] = float(tp[1] / union[1]) if union[1] > 0 else None
    return out


def evaluate(predict, batches, num_classes: int, ids=None, postprocess: dict | None = None,
             worst: int = 6, threshold: float = 0.5, binary: bool = False) -> dict:
    """Run ``predict`` over ``batches`` of ``(images, labels)`` (labels: ids, negative or
    >= C ignored; a trailing channel of 1 is dropped) and accumulate confusion matrices.

    A binary model's 1-channel output becomes class ids ``p >= threshold`` (``num_classes`` 2).
    Returns ``cm`` (and ``cm_postprocessed`` if ``postprocess`` holds options for
    :func:`kseg.postprocess.postprocess`), ``per_image`` (id, mIoU, pixel accuracy,
    the post-processed mIoU, and with ``binary`` the foreground IoU) and ``worst``: up to
    ``worst`` tuples ``(score, id, image, truth, prediction)``, lowest first, where the
    score is the mIoU, or with ``binary`` the foreground IoU.
    """
    from kseg.metrics import confusion_matrix

    c = num_classes
    rank = "foreground_iou" if binary else "miou"
    cm = np.zeros((c, c), np.int64)
    cm_pp = np.zeros((c, c), np.int64) if postprocess else None
    per_image, n = [], 0
    worst_images = _Worst(worst)
    for images, labels in batches:
        images = np.asarray(images)
        labels = _label_ids(labels, c)
        preds = to_labels(predict(images), c, threshold)
        if preds.shape != labels.shape:
            raise KsegError(f"the model returned maps of {preds.shape[1:]} for labels of {labels.shape[1:]}")
        for i in range(len(images)):
            ident = ids[n] if ids is not None else str(n)
            cm += confusion_matrix(labels[i], preds[i], c)
            row = {"id": ident, **image_scores(labels[i], preds[i], c, binary)}
            if postprocess:
                cm_pp += _score_postprocessed(labels[i], preds[i], c, postprocess, row)
            per_image.append(row)
            if row[rank] is not None:
                worst_images.add(row[rank], n, ident, images[i], labels[i], preds[i])
            n += 1
    out = {"cm": cm, "per_image": per_image, "worst": worst_images.lowest_first(), "images": n}
    if postprocess:
        out["cm_postprocessed"] = cm_pp
    return out


def _label_ids(labels, c: int) -> np.ndarray:
    """Label ids (N, H, W) as int64, -1 where negative or >= ``c``; a trailing channel of 1 is dropped."""
    labels = np.asarray(labels)
    if labels.ndim == 4 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    labels = labels.astype(np.int64)
    return np.where((labels < 0) | (labels >= c), -1, labels)


def _score_postprocessed(truth, pred, c: int, options: dict, row: dict) -> np.ndarray:
    """The confusion matrix of ``pred`` after :func:`kseg.postprocess.postprocess`; sets ``row``'s
    ``miou_postprocessed``."""
    from kseg.metrics import confusion_matrix
    from kseg.postprocess import postprocess as pp

    post = pp(pred, **options)
    row["miou_postprocessed"] = image_scores(truth, post, c)["miou"]
    return confusion_matrix(truth, post, c)


class _Worst:
    """The ``k`` images of lowest score seen so far (ties: the earlier image counts as worse)."""

    def __init__(self, k: int):
        self.k, self.heap = k, []

    def add(self, score: float, n: int, ident, image, truth, pred) -> None:
        if self.k <= 0:
            return
        item = (-score, -n, ident, np.clip(image, 0, 255).astype(np.uint8), truth.astype(np.int8),
                pred.astype(np.int8))
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif item[:2] > self.heap[0][:2]:
            heapq.heapreplace(self.heap, item)

    def lowest_first(self) -> list:
        """``(score, id, image, truth, prediction)`` tuples, lowest score first."""
        return [(-m, ident, im, t, p) for m, _, ident, im, t, p in sorted(self.heap, key=lambda e: e[:2],
                                                                           reverse=True)]


def native_batches(image_paths, labels):
    """One ``(image[None], label[None])`` per image at its own (native) size."""
    for path, lab in zip(image_paths, labels):
        yield read_image(path)[None], np.asarray(lab)[None]


def native_predict(model, scales=(1.0,), flip: bool = False, size=None):
    """``predict(images) -> probabilities`` for one-image batches, at the image's own size, with
    multi-scale and flip test-time augmentation (a :class:`kseg.inference.Predictor`)."""
    from kseg.inference import Predictor

    predictor = Predictor(model, size=size, scales=scales, flip=flip)
    return lambda images: np.stack([predictor(im) for im in images])


def evaluate_native(model, image_paths, labels, class_names, scales=(1.0,), flip: bool = False, size=None,
                    threshold: float = 0.5) -> dict:
    """Scores of a Keras ``model`` against ``labels`` at each image's native resolution.

    The image is resized to ``size`` (default: the model's input size) times each
    of ``scales`` (and mirrored with ``flip``), the probabilities are resized back
    to the image's size and averaged, and the argmax is compared with the original
    label map: the protocol of the Stanford Background literature.
    """
    from kseg.metrics import scores

    res = evaluate(native_predict(model, scales, flip, size), native_batches(image_paths, labels),
                   len(class_names), worst=0, threshold=threshold)
    report = scores(res["cm"], list(class_names))
    report["confusion_matrix"] = res["cm"].tolist()
    report["images"] = res["images"]
    return report


# the scores change() compares: scalars and per-class dicts
SCALARS = ("pixel_accuracy", "mean_accuracy", "miou", "fw_iou", "mean_dice", "mean_precision", "mean_recall")


PER_CLASS = ("iou", "dice", "precision", "recall")


def change(before: dict, after: dict) -> dict:
    """``after - before`` for the scalar scores and the per-class ones (None where either is None)."""
    def diff(a, b):
        return None if a is None or b is None or _nan(a) or _nan(b) else b - a

    out = {k: diff(before[k], after[k]) for k in SCALARS}
    for k in PER_CLASS:
        out[k] = {n: diff(before[k][n], after[k][n]) for n in before[k]}
    return out


def _nan(v):
    return isinstance(v, float) and math.isnan(v)


def clean(obj):
    """JSON-safe: NaN becomes null, NumPy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _class_ids(spec, class_names, what):
    ids = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        if part.isdigit() and int(part) < len(class_names):
            ids.append(int(part))
        elif part in class_names:
            ids.append(list(class_names).index(part))
        else:
            raise KsegError(f"bad {what} {part!r}: give class names or ids from {', '.join(class_names)}")
    return ids


def _apply_spec(args):
    """Fold ``--postprocess open:3,close:3,min-area:64`` (kseg.predict's form) into the other options."""
    for item in str(args.postprocess).split(","):
        name, _, val = item.strip().partition(":")
        name = name.strip().lower().replace("_", "-")
        defaults = {"open": 3, "close": 3, "min-area": 64, "min-region": 64}
        if name not in defaults:
            raise KsegError(f"bad --postprocess step {item!r}: choose from open:K, close:K, min-area:N")
        try:
            value = int(val) if val.strip() else defaults[name]
        except ValueError:
            raise KsegError(f"bad --postprocess step {item!r}: the value after ':' must be an integer") from None
        if name == "open":
            args.open = value
        elif name == "close":
            args.close = value
        else:
            args.min_region = str(value)


def postprocess_options(args, class_names) -> dict | None:
    """The :func:`kseg.postprocess.postprocess` options from the command line (None: none asked)."""
    if getattr(args, "postprocess", None):
        _apply_spec(args)
    for flag, k in (("--open", args.open), ("--close", args.close)):
        if k and (k < 3 or k % 2 == 0):
            raise KsegError(f"bad {flag} {k}: give an odd kernel size of 3 or more (or 0 for none)")
        if k < 0:
            raise KsegError(f"bad {flag} {k}: give an odd kernel size of 3 or more (or 0 for none)")
    classes = _class_ids(args.pp_classes, class_names, "--pp-classes") if args.pp_classes else None
    min_size = 0
    if args.min_region:
        spec = str(args.min_region)
        if "=" in spec:
            min_size = {}
            for part in spec.split(","):
                name, _, val = part.partition("=")
                (cid,) = _class_ids(name, class_names, "--min-region class")
                min_size[cid] = _positive(val, "--min-region")
        else:
            min_size = _positive(spec, "--min-region")
    if not (args.open or args.close or min_size):
        if classes is not None:
            raise KsegError("--pp-classes needs --open, --close or --min-region")
        return None
    return {"opening_kernel": args.open, "closing_kernel": args.close, "min_size": min_size, "classes": classes}


def _positive(val, flag):
    try:
        v = int(val)
    except ValueError:
        v = -1
    if v < 1:
        raise KsegError(f"bad {flag} {val!r}: give a positive number of pixels, e.g. 50 or sky=200")
    return v
