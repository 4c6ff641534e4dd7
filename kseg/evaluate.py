"""Evaluate a trained model: ``python -m kseg.evaluate --model runs/x/best.keras``.

The data is iccv09 (``--data-format iccv09``, ``--mask surfaces|regions``) or the user's own
folder of images and masks (``--data-format folder --data DIR``, see :func:`kseg.data.folder`;
``--classes``, ``--palette``, ``--ignore-index`` as in training; a ``--data`` folder with ``images/``
and ``masks/`` but no ``labels/`` is read as folder data when no format is given). ``run.json`` beside the model
(written by ``kseg.train``, see :mod:`kseg.runinfo`) fills every setting the command line does not
give: the data and its format, the mask, class names and colours, the size, a binary model's
threshold and the split. With the run's ``val_ids`` the validation images are exactly the run's,
matched by id; options that change the split (``--val-split``, ``--seed``, ``--fold``, ``--limit``,
``--split all``) win, with a warning when the images scored include the run's training images.
Without ``run.json`` the split is assumed to be ``--val-split 0.2 --seed 42`` and the command says so.

A binary model (one output channel, the foreground probability) predicts foreground where
``p >= --threshold`` (default 0.5); its confusion matrix is 2x2 (background, foreground), the
table and ``report.json`` add ``foreground_iou`` and ``foreground_dice``, and the worst images are
those with the lowest foreground IoU.

One confusion matrix over the whole evaluation set gives every score (see
:mod:`kseg.metrics`). The output folder (``--out``, default ``<model folder>/eval``) gets:

- ``report.json``           scores (pixel accuracy, mean class accuracy, mIoU, fw-IoU, Dice,
                            precision, recall, per class), the confusion matrix, per-image mIoU,
                            and with post-processing its scores and the change it brings
- ``confusion_matrix.png``  row-normalised, with class names (``..._postprocessed.png`` too)
- ``worst.png``             the images with the lowest mIoU (binary: foreground IoU): image, truth, prediction

and the terminal a per-class table. ``--model`` is a ``.keras`` file or a
SavedModel folder (its ``serving_default`` signature).

``--native`` scores at each photo's own resolution, ``--scales`` and ``--flip`` add
test-time augmentation there, and ``--output-stride 8`` runs a DeepLabV3+ trained at
stride 16 at 8 (:func:`kseg.models.with_output_stride`); those three need a ``.keras`` model.

Post-processing (``--open K``, ``--close K``, ``--min-region N``, ``--pp-classes``)
applies :mod:`kseg.postprocess` to each predicted map before scoring it again.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from kseg.errors import KsegError, cli_entry


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kseg.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .keras file or a SavedModel folder")
    p.add_argument("--data", default=None, help="iccv09Data folder or iccv09Data.tar.gz (default: run.json's, else "
                                                "find it); with --data-format folder: a folder holding images/ and "
                                                "masks/")
    p.add_argument("--data-format", choices=("iccv09", "folder"), default=None,
                   help="iccv09 or folder (your own images/ + masks/; see kseg.data.folder); default: run.json's, "
                        "else iccv09")
    p.add_argument("--mask", default=None, help="iccv09: regions (8 classes) or surfaces (3 classes); default: "
                                                "run.json's, else surfaces")
    p.add_argument("--classes", default=None, help="folder data: class names, comma-separated (default: run.json's, "
                                                   "else the folder's palette file or classes.txt)")
    p.add_argument("--palette", default=None, help="a palette file (class names and colours; folder data reads RGB "
                                                   "masks with it) or surfaces/regions; default: run.json's colours")
    p.add_argument("--ignore-index", type=int, default=None, help="folder data: the mask value of unknown pixels "
                                                                  "(default: run.json's, else 255)")
    p.add_argument("--threshold", type=float, default=None,
                   help="binary models: foreground where p >= this (default: run.json's, else 0.5)")
    p.add_argument("--size", default=None, help="H or HxW, multiples of 32 (default: the model's input "
                                                "size, else run.json's, else 224)")
    p.add_argument("--split", default="val", choices=("val", "all"), help="the validation split (default) or every image")
    p.add_argument("--val-split", type=float, default=None,
                   help="validation fraction (default: the run's validation images from run.json, else 0.2)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: run.json's, else 42)")
    p.add_argument("--fold", type=int, default=None, choices=range(5), metavar="K",
                   help="evaluate on fold K (0-4) of kseg's 5-fold split, as trained with --fold K")
    p.add_argument("--native", action="store_true",
                   help="score at each image's native resolution (probabilities resized back), "
                        "as the literature does; implied by --scales and --flip")
    p.add_argument("--scales", default=None, help="test-time scales of the model's size, e.g. 0.75,1,1.25 "
                                                  "(.keras models; scores at native resolution)")
    p.add_argument("--flip", action="store_true", help="add mirrored copies (test-time flip; native resolution)")
    p.add_argument("--output-stride", type=int, default=None, choices=(8, 16, 32), metavar="N",
                   help="run a .keras DeepLabV3+ (or other atrous model) at output stride N, e.g. 8 for one "
                        "trained at 16 (DeepLab's evaluation: denser features, more compute)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (default: run.json's)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--out", default=None, help="output folder (default: <model folder>/eval)")
    p.add_argument("--worst", type=int, default=6, help="how many of the worst images to draw (default 6)")
    p.add_argument("--open", type=int, default=0, metavar="K", help="post-process: opening with a KxK kernel")
    p.add_argument("--close", type=int, default=0, metavar="K", help="post-process: closing with a KxK kernel")
    p.add_argument("--min-region", default=None, metavar="N",
                   help="post-process: remove regions under N pixels; N or per class, e.g. sky=200,vertical=50")
    p.add_argument("--postprocess", default=None, metavar="STEPS",
                   help="the same as one spec, as kseg.predict takes it: e.g. open:3,close:3,min-area:64")
    p.add_argument("--pp-classes", default=None, help="post-process only these classes (names or ids, "
                                                      "comma-separated)")
    p.add_argument("--cache-dir", default=None, help="where parsed labels are cached")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- models


def load_predictor(path, output_stride: int | None = None):
    """``(predict, info)`` for a ``.keras`` file or a SavedModel folder.

    ``predict(images)`` takes a float32 (N, H, W, 3) batch of raw RGB in [0, 255]
    and returns NumPy class scores (N, H, W, C), a binary model's foreground
    probability (N, H, W, 1), or class ids (N, H, W). ``info`` has ``format``,
    ``input_size`` ((H, W) or None) and ``num_classes`` (the output channels, 1 for
    a binary model; None when a SavedModel does not say). ``output_stride`` runs a
    ``.keras`` model at that stride (:func:`kseg.models.with_output_stride`).
    """
    path = Path(path)
    if not path.exists():
        raise KsegError(f"{path}: no such model file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            hint = " (it holds best.keras: pass that file)" if (path / "best.keras").exists() else ""
            raise KsegError(f"{path}: not a SavedModel folder, no saved_model.pb{hint}")
        if output_stride is not None:
            raise KsegError(f"{path}: --output-stride needs a .keras model, not a SavedModel")
        return _saved_model_predictor(path)
    from kseg.export import load_model

    model = load_model(path)
    if output_stride is not None:
        from kseg.models import with_output_stride

        model = with_output_stride(model, output_stride)
    shape = tuple(model.input_shape)
    size = tuple(shape[1:3]) if len(shape) == 4 and None not in shape[1:3] else None

    def predict(images):
        return np.asarray(model.predict_on_batch(images))

    return predict, {"format": "keras", "input_size": size, "num_classes": int(model.outputs[0].shape[-1]),
                     "model": model}


def _output_key(keys):
    """The output to read from a serving signature's dict: the probabilities, else the only one."""
    keys = sorted(keys)
    key = next((k for k in keys if "prob" in k), None)
    if key is None and len(keys) == 1:
        key = keys[0]
    return key


def _saved_model_predictor(path):
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(str(path))
    except Exception as err:  # TF raises many types for a broken folder
        raise KsegError(f"{path}: cannot load the SavedModel ({type(err).__name__}: {err})") from None
    sig = getattr(obj, "signatures", {}).get("serving_default")
    if sig is None:
        raise KsegError(f"{path}: the SavedModel has no serving_default signature")
    args, kwargs = sig.structured_input_signature
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1:
        raise KsegError(f"{path}: serving_default takes {len(specs)} inputs, expected one image batch")
    name = next(iter(kwargs)) if kwargs else None
    spec = specs[0]
    dtype = spec.dtype
    size = None
    if spec.shape.rank == 4 and spec.shape[1] is not None and spec.shape[2] is not None:
        size = (int(spec.shape[1]), int(spec.shape[2]))
    outputs = sig.structured_outputs
    channels = None
    if isinstance(outputs, dict) and outputs:
        key = _output_key(outputs) or next((k for k in sorted(outputs) if outputs[k].shape.rank == 4),
                                           sorted(outputs)[0])
        out_spec = outputs[key]
    else:
        key, out_spec = None, outputs
    shape = getattr(out_spec, "shape", None)
    if shape is not None and shape.rank == 4 and shape[-1] is not None and out_spec.dtype.is_floating:
        channels = int(shape[-1])

    def predict(images):
        x = np.asarray(images, np.float32)
        if dtype.is_integer:  # e.g. uint8 images: round the resized floats back
            x = np.clip(np.rint(x), dtype.min, dtype.max)
        x = tf.convert_to_tensor(x, dtype)
        out = sig(**{name: x}) if name else sig(x)
        if isinstance(out, dict):
            out = out[key] if key is not None else next(iter(out.values()))
        return np.asarray(out)

    return predict, {"format": "saved_model", "input_size": size, "num_classes": channels}


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
        return (out[..., 0] >= threshold).astype(np.int64)
    if out.ndim == 4:
        if out.shape[-1] != num_classes:
            raise KsegError(f"the model predicts {out.shape[-1]} classes but the labels have {num_classes}: "
                            "check --mask")
        return np.argmax(out, -1)
    if out.ndim == 3 and np.issubdtype(out.dtype, np.integer):
        return out.astype(np.int64)
    raise KsegError(f"cannot read the model's output of shape {out.shape} as class scores")


# --------------------------------------------------------------------------- scoring


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
    from kseg.postprocess import postprocess as pp

    c = num_classes
    rank = "foreground_iou" if binary else "miou"
    cm = np.zeros((c, c), np.int64)
    cm_pp = np.zeros((c, c), np.int64) if postprocess else None
    per_image, heap, n = [], [], 0
    for images, labels in batches:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if labels.ndim == 4 and labels.shape[-1] == 1:
            labels = labels[..., 0]
        labels = labels.astype(np.int64)
        labels = np.where((labels < 0) | (labels >= c), -1, labels)
        preds = to_labels(predict(images), c, threshold)
        if preds.shape != labels.shape:
            raise KsegError(f"the model returned maps of {preds.shape[1:]} for labels of {labels.shape[1:]}")
        for i in range(len(images)):
            ident = ids[n] if ids is not None else str(n)
            cm += confusion_matrix(labels[i], preds[i], c)
            row = {"id": ident, **image_scores(labels[i], preds[i], c, binary)}
            shown = preds[i]
            if postprocess:
                post = pp(preds[i], **postprocess)
                cm_pp += confusion_matrix(labels[i], post, c)
                row["miou_postprocessed"] = image_scores(labels[i], post, c)["miou"]
            per_image.append(row)
            if worst > 0 and row[rank] is not None:
                item = (-row[rank], -n, ident, np.clip(images[i], 0, 255).astype(np.uint8),
                        labels[i].astype(np.int8), shown.astype(np.int8))
                if len(heap) < worst:
                    heapq.heappush(heap, item)
                elif item[:2] > heap[0][:2]:
                    heapq.heapreplace(heap, item)
            n += 1
    worst_list = [(-m, ident, im, t, p) for m, _, ident, im, t, p in sorted(heap, key=lambda e: e[:2], reverse=True)]
    out = {"cm": cm, "per_image": per_image, "worst": worst_list, "images": n}
    if postprocess:
        out["cm_postprocessed"] = cm_pp
    return out


def native_batches(image_paths, labels):
    """One ``(image[None], label[None])`` per image at its own (native) size."""
    from kseg.predict import read_image

    for path, lab in zip(image_paths, labels):
        yield read_image(path)[None], np.asarray(lab)[None]


def native_predict(model, scales=(1.0,), flip: bool = False, size=None):
    """``predict(images) -> probabilities`` for one-image batches, at the image's own size, with
    multi-scale and flip test-time augmentation (a :class:`kseg.predict.Predictor`)."""
    from kseg.predict import Predictor

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


def _clean(obj):
    """JSON-safe: NaN becomes null, NumPy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_table(report: dict, post: dict | None = None) -> str:
    """The per-class table and the summary lines printed on the terminal."""
    names = report["class_names"]
    width = max(12, *(len(n) for n in names)) + 2

    def f(v):
        return "   -  " if v is None or _nan(v) else f"{v:6.4f}"

    head = f"{'class':<{width}}{'IoU':>8}{'Dice':>8}{'Prec.':>8}{'Recall':>8}{'pixels':>12}"
    if post:
        head += f"{'IoU pp':>9}{'change':>9}"
    lines = [head, "-" * len(head)]
    for n in names:
        line = (f"{n:<{width}}{f(report['iou'][n]):>8}{f(report['dice'][n]):>8}"
                f"{f(report['precision'][n]):>8}{f(report['recall'][n]):>8}{report['support'][n]:>12,}")
        if post:
            d = None if report["iou"][n] is None or post["iou"][n] is None else post["iou"][n] - report["iou"][n]
            line += f"{f(post['iou'][n]):>9}{'   -' if d is None else f'{d:+.4f}':>9}"
        if n in report["absent"]:
            line += "  (absent)"
        lines.append(line)
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{width}}{f(report['miou']):>8}{f(report['mean_dice']):>8}"
                 f"{f(report['mean_precision']):>8}{f(report['mean_recall']):>8}{report['pixels']:>12,}"
                 + (f"{f(post['miou']):>9}{post['miou'] - report['miou']:>+9.4f}" if post else ""))
    lines.append(f"pixel accuracy {f(report['pixel_accuracy'])}   mean class accuracy "
                 f"{f(report['mean_accuracy'])}   frequency-weighted IoU {f(report['fw_iou'])}")
    if post:
        lines.append(f"post-processed: pixel accuracy {f(post['pixel_accuracy'])} "
                     f"({post['pixel_accuracy'] - report['pixel_accuracy']:+.4f}), mIoU {f(post['miou'])} "
                     f"({post['miou'] - report['miou']:+.4f})")
    if report.get("binary"):
        fg = "foreground" + ("" if report["foreground"] == "foreground" else f" ({report['foreground']})")
        lines.append(f"{fg}: IoU {f(report['foreground_iou'])}   Dice "
                     f"{f(report['foreground_dice'])}   (p >= {report['threshold']:g})")
    if report["absent"]:
        lines.append(f"absent from truth and prediction (left out of the means): {', '.join(report['absent'])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


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


# a binary dataset's background and foreground, when none are given (kseg.viz.PALETTES["binary"])
BINARY_COLORS = ((90, 90, 90), (230, 30, 30))


def _split_note(args, info) -> str | None:
    """The one line saying the split is assumed (no run.json), or None."""
    if info is not None or args.split != "val":
        return None
    if args.fold is not None:
        given = f"--fold {args.fold}"
    else:
        given = f"--val-split {args.val_split:g} --seed {args.seed}"
    given += f" --limit {args.limit}" if args.limit is not None else " (no --limit)"
    return (f"kseg: no run.json beside {args.model}: assuming the run's split was {given}; "
            f"if training used other values, pass them, or the scores may include training images")


def resolve(args, info: dict | None) -> list[str]:
    """Fill the options the command line leaves unset from the run's ``run.json`` (``info``), else
    from the defaults. Returns what was taken from ``run.json``, as options (``--size 64x64``, ...).

    Sets ``args.val_ids`` to the run's validation ids when they decide the split (None otherwise)
    and ``args.train_ids`` to the run's training ids (None when unknown)."""
    info = info or {}
    taken = []

    def take(attr, key, flag, show=None):
        if getattr(args, attr) is None and info.get(key) is not None:
            setattr(args, attr, info[key])
            taken.append(f"{flag} {show(info[key]) if show else info[key]}")

    take("data_format", "data_format", "--data-format")
    take("data", "data", "--data")
    if args.data_format is None:
        args.data_format = "iccv09"
        d = Path(str(args.data)) if args.data else None
        if d is not None and d.is_dir() and (d / "images").is_dir() and not (d / "labels").exists() and any(
                (d / n).is_dir() for n in ("masks", "annotations")):
            args.data_format = "folder"
            print(f"kseg: {d} holds images/ and masks/ (not iccv09's labels/): reading it as --data-format folder",
                  file=sys.stderr, flush=True)
    if args.data_format == "iccv09":
        from kseg.data import MASKS

        if info.get("mask") in MASKS:
            take("mask", "mask", "--mask")
        args.mask = args.mask or "surfaces"
    else:
        if args.mask not in (None, "folder"):
            raise KsegError(f"--mask {args.mask} is for iccv09 data: folder data has its own masks "
                            f"(name classes with --classes or a palette file)")
        args.mask = "folder"
        take("classes", "class_names", "--classes", lambda v: ",".join(map(str, v)))
        if "ignore_index" in info and info["ignore_index"] is None and args.ignore_index is None:
            args.ignore_index = NO_IGNORE  # the run had no ignore value (--ignore-index none)
            taken.append("--ignore-index none")
        elif info.get("ignore_index") != 255:  # the default needs no mention
            take("ignore_index", "ignore_index", "--ignore-index")
    if args.data_format == "iccv09" and (args.classes or args.ignore_index is not None):
        raise KsegError("--classes and --ignore-index are for --data-format folder (iccv09's classes are "
                        "fixed by --mask)")
    args.colors = None
    if args.palette is None and info.get("colors") is not None:
        args.colors = [[int(v) for v in c] for c in info["colors"]]
        taken.append("the class colours")
    if info.get("binary"):  # a multi-class run's threshold means nothing
        take("threshold", "threshold", "--threshold", lambda v: f"{v:g}")
    args.run_size = None
    if args.size is None and info.get("size"):
        args.run_size = "x".join(str(int(v)) for v in info["size"])
    args.binary_run = info.get("binary")
    args.train_ids = info.get("train_ids")
    args.val_ids = None
    user_split = args.split == "all" or any(v is not None for v in (args.val_split, args.fold, args.seed, args.limit))
    if args.split == "val" and not user_split and info.get("val_ids"):
        args.val_ids = list(info["val_ids"])
        args.limit = info.get("limit")
        taken.append(f"the split (the run's {len(args.val_ids)} validation images)")
    else:
        if args.val_split is None and args.fold is None and args.split == "val":
            take("fold", "fold", "--fold")
            if args.fold is None:
                take("val_split", "val_split", "--val-split", lambda v: f"{v:g}")
        if args.split == "val":
            take("seed", "seed", "--seed")
        take("limit", "limit", "--limit")
    if args.val_split is None:
        args.val_split = 0.2
    if args.seed is None:
        args.seed = 42
    return taken


NO_IGNORE = -1  # args.ignore_index when the run's masks have no ignore value (run.json "ignore_index": null)


def _load_folder(args, class_names, binary: bool | None):
    """:func:`kseg.data.folder` with the options it accepts (``binary`` on kseg versions that have it)."""
    import inspect

    from kseg.data import folder

    ignore = 255 if args.ignore_index is None else None if args.ignore_index == NO_IGNORE else args.ignore_index
    kwargs = {"class_names": class_names, "ignore_index": ignore,
              "limit": args.limit}
    if args.palette and Path(args.palette).is_file():
        kwargs["palette"] = args.palette
    if "binary" in inspect.signature(folder).parameters:
        kwargs["binary"] = binary
    return folder(args.data, **kwargs)


def _check_data(args, info):
    data = args.data
    if data is None and args.data_format == "folder":
        raise KsegError("--data-format folder needs --data: a folder holding images/ and masks/")
    if data is not None and info is not None and data == info.get("data") and not Path(data).exists():
        raise KsegError(f"{data}: the run's data (from {info['_path']}) is not there: pass --data")


def _pick(ds, val_ids, limit, load_again):
    """Positions in ``ds`` of the run's validation ids; reloads without ``limit`` when some are missing."""
    pos = {ident: i for i, ident in enumerate(ds.ids)}
    missing = [v for v in val_ids if v not in pos]
    if missing and limit is not None:
        ds = load_again()
        pos = {ident: i for i, ident in enumerate(ds.ids)}
        missing = [v for v in val_ids if v not in pos]
    idx = np.array(sorted(pos[v] for v in val_ids if v in pos), np.int64)
    return ds, idx, missing


def run(args) -> dict:
    """Evaluate as the parsed ``args`` say; write the outputs and return the report."""
    from kseg.data import CLASS_NAMES, MASKS, check_size
    from kseg.runinfo import read_run_info

    if args.batch_size < 1:
        raise KsegError(f"bad --batch-size {args.batch_size}: give a positive integer")
    if args.split == "val" and args.val_split is not None and not 0.0 < args.val_split < 1.0:
        raise KsegError(f"bad --val-split {args.val_split}: give a fraction between 0 and 1, e.g. 0.2")
    if args.worst < 0:
        raise KsegError(f"bad --worst {args.worst}: give 0 or a positive number of images")
    if args.limit is not None and args.limit < 1:
        raise KsegError(f"bad --limit {args.limit}: give a positive integer")
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise KsegError(f"bad --threshold {args.threshold}: give a probability between 0 and 1, e.g. 0.5")
    from kseg.viz import PALETTES

    if args.palette and args.palette not in PALETTES and not Path(args.palette).is_file():
        raise KsegError(f"bad --palette {args.palette!r}: give {', '.join(PALETTES)} or a palette file")
    model_path = Path(args.model)
    info = read_run_info(model_path) if model_path.exists() else None
    threshold_given = args.threshold is not None
    taken = resolve(args, info)
    if args.data_format == "iccv09" and args.mask not in MASKS:
        raise KsegError(f"unknown --mask {args.mask!r}: choose one of {', '.join(MASKS)}")
    _check_data(args, info)
    if args.out:
        out = Path(args.out)
    elif model_path.is_dir():  # runs/x/saved_model -> runs/x/saved_model-eval
        out = model_path.parent / f"{model_path.name}-eval"
    else:  # runs/x/best.keras -> runs/x/eval
        out = model_path.parent / "eval"

    t0 = time.time()
    predict, minfo = load_predictor(model_path, args.output_stride)
    channels = minfo.get("num_classes")
    binary = channels == 1 or (channels is None and bool(args.binary_run))
    if binary and args.threshold is None and info is not None and info.get("threshold") is not None:
        args.threshold = info["threshold"]
        taken.append(f"--threshold {args.threshold:g}")
    threshold = 0.5 if args.threshold is None else float(args.threshold)
    if not binary and threshold_given:
        raise KsegError(f"{model_path}: --threshold is for binary models (one output channel); "
                        f"this one predicts {channels} classes")
    if args.data_format == "iccv09":
        class_names = list(CLASS_NAMES[args.mask])
        if binary:
            raise KsegError(f"{model_path}: a binary model (one output channel) cannot be scored on iccv09's "
                            f"{args.mask} labels ({len(class_names)} classes): use --data-format folder")
        if channels not in (None, len(class_names)):
            raise KsegError(f"{model_path}: the model predicts {channels} classes but --mask {args.mask} "
                            f"has {len(class_names)}: was it trained for the other mask?")
    size = check_size(args.size or minfo["input_size"] or args.run_size or 224)
    if args.size is None and minfo["input_size"] is None and args.run_size:
        taken.append(f"--size {size[0]}x{size[1]}")
    names = None
    if args.data_format == "folder":
        names = [c.strip() for c in args.classes.split(",") if c.strip()] if isinstance(args.classes, str) \
            else (list(args.classes) if args.classes else None)
        if binary and names is not None and len(names) != 2:
            raise KsegError(f"{model_path}: a binary model has two classes (background, foreground) but "
                            f"{len(names)} class names were given: {', '.join(names)}")
    if info is not None:
        print(f"kseg: from {info['_path']}: {', '.join(taken) if taken else 'nothing (the command line gives all)'}",
              file=sys.stderr, flush=True)

    from kseg.data import load_iccv09, make_dataset, split_indices

    if args.data_format == "folder":
        flag = True if binary else (False if channels is not None and channels > 2 else None)

        def load(limit=args.limit):
            saved, args.limit = args.limit, limit
            try:
                return _load_folder(args, names, flag)
            finally:
                args.limit = saved

        ds = load()
        class_names = list(ds.class_names)
        if binary:
            if getattr(ds, "binary", None) is False or len(class_names) > 2:
                raise KsegError(f"{args.data}: the model is binary (one output channel) but the masks hold "
                                f"{len(class_names)} classes ({', '.join(class_names[:5])}"
                                f"{', ...' if len(class_names) > 5 else ''})")
            class_names = class_names if len(class_names) == 2 else (names or ["background", "foreground"])
        elif channels is not None and len(class_names) != channels:
            if names is None and len(class_names) < channels and all(
                    n == f"class{i}" for i, n in enumerate(class_names)):
                class_names += [f"class{i}" for i in range(len(class_names), channels)]
            else:
                raise KsegError(f"{model_path}: the model predicts {channels} classes but {args.data} has "
                                f"{len(class_names)} ({', '.join(class_names[:5])}"
                                f"{', ...' if len(class_names) > 5 else ''}): is this the run's data?")
        label = Path(str(args.data)).name or str(args.data)
    else:
        def load(limit=args.limit):
            return load_iccv09(args.data, mask=args.mask, cache_dir=args.cache_dir, limit=limit)

        ds = load()
        label = args.mask
    pp_opts = postprocess_options(args, class_names)

    training_scored = None
    if args.val_ids is not None:
        ds, idx, missing = _pick(ds, args.val_ids, args.limit, lambda: load(None))
        if len(idx) == 0:
            raise KsegError(f"{ds.root}: none of the run's {len(args.val_ids)} validation images (run.json "
                            f"val_ids, e.g. {args.val_ids[0]}) is here: pass the run's data with --data")
        if missing:
            print(f"kseg: warning: {len(missing)} of the run's {len(args.val_ids)} validation images are not in "
                  f"{ds.root} (e.g. {missing[0]}): scoring the {len(idx)} found", file=sys.stderr, flush=True)
        split = "the run's validation images"
    else:
        if args.split == "all":
            idx = np.arange(len(ds))
        elif args.fold is not None:
            from kseg.data import fold_indices

            idx = fold_indices(ds.ids, args.fold)[1]
        else:
            idx = split_indices(len(ds), args.val_split, args.seed)[1]
        split = f"fold {args.fold}" if args.fold is not None and args.split == "val" else f"{args.split} split"
        note = _split_note(args, info)
        if note:
            print(note, file=sys.stderr, flush=True)
    if len(idx) == 0:
        raise KsegError("no images to evaluate: use more images or --split all")
    ids = [ds.ids[i] for i in idx]
    if args.train_ids is not None:
        train = set(map(str, args.train_ids))
        training_scored = sum(str(i) in train for i in ids)
        if training_scored:
            print(f"kseg: warning: {training_scored} of the {len(ids)} images scored are training images of this run "
                  f"(run.json train_ids): the scores overstate how the model does on new images",
                  file=sys.stderr, flush=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KsegError(f"{out}: cannot create the output folder ({err.strerror})") from None
    scales = None
    native = args.native or args.scales is not None or args.flip
    if native:
        from kseg.predict import parse_scales

        scales = parse_scales(args.scales or "1")
        if minfo["format"] != "keras":
            raise KsegError(f"{model_path}: --native, --scales and --flip need a .keras model, not a SavedModel")
        predict = native_predict(minfo["model"], scales, args.flip, size)
        batches = native_batches([ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx])
        how = (f"at native resolution (model input {size[0]}x{size[1]}, scales {','.join(f'{v:g}' for v in scales)}"
               f"{', flips' if args.flip else ''})")
    else:
        data = make_dataset([ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx], len(class_names),
                            size, args.batch_size, sparse=True)
        batches = ((x.numpy(), y.numpy()) for x, y in data)
        how = f"at {size[0]}x{size[1]}"
    if args.output_stride is not None:
        how += f", output stride {args.output_stride}"
    if binary:
        how += f", binary: foreground where p >= {threshold:g}"
    print(f"kseg: evaluating {model_path} ({minfo['format']}) on {len(idx)} images "
          f"({split} of {len(ds)}, {label}) {how}", flush=True)
    res = evaluate(predict, batches, len(class_names), ids=ids, postprocess=pp_opts, worst=args.worst,
                   threshold=threshold, binary=binary)

    from kseg.metrics import scores
    from kseg.viz import plot_confusion_matrix, save_captioned_grid

    report = scores(res["cm"], class_names)
    cm = res["cm"]
    rows = cm.sum(1, keepdims=True)
    report.update({
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0).tolist(),
        "model": str(model_path), "model_format": minfo["format"], "data": str(ds.root),
        "data_format": args.data_format, "mask": args.mask,
        "split": args.split,
        "split_from": "run.json val_ids" if args.val_ids is not None else ("assumed" if info is None else "options"),
        "val_split": args.val_split if args.split == "val" and args.val_ids is None else None, "seed": args.seed,
        "limit": args.limit, "size": list(size), "images": res["images"], "fold": args.fold,
        "native": bool(native), "scales": list(scales) if scales else None, "flip": bool(args.flip),
        "output_stride": args.output_stride, "per_image": res["per_image"], "worst": [w[1] for w in res["worst"]],
        "run_info": info["_path"] if info else None, "from_run_info": taken,
        "training_images_scored": training_scored, "binary": bool(binary),
        "threshold": threshold if binary else None,
    })
    if binary:
        fg = class_names[1]
        report.update({"foreground": fg, "foreground_iou": report["iou"][fg], "foreground_dice": report["dice"][fg]})
    colors = _colors(args, class_names, ds, binary, model_path)
    files = {"report": str(out / "report.json"), "confusion_matrix": str(out / "confusion_matrix.png")}
    plot_confusion_matrix(out / "confusion_matrix.png", cm, class_names,
                          title=f"{label}: confusion matrix ({res['images']} images, rows sum to 1)")
    post = None
    if pp_opts:
        post = scores(res["cm_postprocessed"], class_names)
        opts = dict(pp_opts)
        opts["classes"] = None if opts["classes"] is None else [class_names[c] for c in opts["classes"]]
        if isinstance(opts["min_size"], dict):
            opts["min_size"] = {class_names[c]: v for c, v in opts["min_size"].items()}
        report["postprocess"] = {"options": opts, "scores": post,
                                 "confusion_matrix": res["cm_postprocessed"].tolist(),
                                 "change": change(report, post)}
        files["confusion_matrix_postprocessed"] = str(out / "confusion_matrix_postprocessed.png")
        plot_confusion_matrix(files["confusion_matrix_postprocessed"], res["cm_postprocessed"], class_names,
                              title=f"{label}: after post-processing (rows sum to 1)")
    else:
        report["postprocess"] = None
    if res["worst"]:
        what = "foreground IoU" if binary else "mIoU"
        files["worst"] = str(out / "worst.png")
        save_captioned_grid(out / "worst.png", [w[2] for w in res["worst"]], [w[3] for w in res["worst"]],
                            [w[4] for w in res["worst"]], class_names,
                            [f"{w[1]}: {what} {w[0]:.3f}" for w in res["worst"]], colors,
                            title=f"the {len(res['worst'])} worst images by {what}")
    report["files"] = files
    report["seconds"] = round(time.time() - t0, 2)
    from kseg.errors import write_text_atomic

    write_text_atomic(out / "report.json", json.dumps(_clean(report), indent=2, allow_nan=False), "report")
    print(format_table(report, post))
    print(f"kseg: wrote {', '.join(Path(p).name for p in files.values())} in {out}", flush=True)
    return report


def _colors(args, class_names, ds, binary, model_path):
    """The colours for pictures: --palette, run.json's, the dataset's palette, else kseg's for the mask."""
    if args.palette:
        from kseg.predict import resolve_palette

        return resolve_palette(args.palette, len(class_names), model_path)
    for cand in (args.colors, getattr(ds, "colors", None)):
        if cand is not None and len(np.asarray(cand).reshape(-1, 3)) == len(class_names):
            return np.asarray(cand, np.uint8).reshape(-1, 3)
    if binary:
        return np.array(BINARY_COLORS, np.uint8)
    return args.mask if args.data_format == "iccv09" else None


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
