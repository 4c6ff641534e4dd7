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
SavedModel folder (its ``serving_default`` signature). An instance model (``maskrcnn-coco``, a Mask R-CNN's
``.keras`` or export) is scored with ``--coco instances.json`` instead: COCO box and mask AP
(:mod:`kseg.detection.evaluation`).

``--native`` scores at each photo's own resolution, ``--scales`` and ``--flip`` add
test-time augmentation there, and ``--output-stride 8`` runs a DeepLabV3+ trained at
stride 16 at 8 (:func:`kseg.models.with_output_stride`); those three need a ``.keras`` model.

Post-processing (``--open K``, ``--close K``, ``--min-region N``, ``--pp-classes``)
applies :mod:`kseg.postprocess` to each predicted map before scoring it again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kseg.commandline import command_parser
from kseg.errors import KsegError, cli_entry
# the library this command runs; every name stays importable from kseg.evaluate
from kseg.evaldata import NO_IGNORE, folder_names as _folder_names, ignore_index_option, pick as _pick  # noqa: F401
from kseg.evaluation import (PER_CLASS, SCALARS, _nan, change, clean, evaluate, evaluate_native,  # noqa: F401
                             image_scores, native_batches, native_predict, postprocess_options, to_labels)
from kseg.inference import _output_key, _saved_model_predictor, load_predictor  # noqa: F401
from kseg.reports import BINARY_COLORS, format_table  # noqa: F401

_clean = clean  # its name before kseg.evaluation


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser("kseg.evaluate", __doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .keras file or a SavedModel folder (instance models: also "
                                                  "maskrcnn-coco)")
    p.add_argument("--coco", default=None, help="instance models: the COCO instances JSON to score on (default: none)")
    p.add_argument("--images", default=None, help="--coco: its images folder (default: images/ beside the JSON)")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="--coco: detections drawn and counted in the per-image F1 (default 0.5; AP uses all)")
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
    p.add_argument("--ignore-index", type=ignore_index_option, default=None,
                   help="folder data: the mask value of unknown pixels, or 'none' (default: run.json's, else 255)")
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
    p.add_argument("--scales", default=None, help="test-time scales of the model's size, e.g. 0.75,1,1.25, averaged "
                                                  "(.keras models; scores at native resolution); a multi-scale "
                                                  "model (kseg train --multiscale) merges them by its own attention")
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


# --------------------------------------------------------------------------- run.json and the options


def _split_note(args, info) -> str | None:
    """The one line saying the split is assumed (no run.json), or None."""
    if info is not None or args.split != "val":
        return None
    given = f"--fold {args.fold}" if args.fold is not None else f"--val-split {args.val_split:g} --seed {args.seed}"
    given += f" --limit {args.limit}" if args.limit is not None else " (no --limit)"
    return (f"kseg: no run.json beside {args.model}: assuming the run's split was {given}; "
            f"if training used other values, pass them, or the scores may include training images")


def _take(args, info: dict, taken: list, attr, key, flag, show=None) -> None:
    """Set ``args.<attr>`` from run.json's ``key`` when the command line leaves it unset; note it in ``taken``."""
    if getattr(args, attr) is None and info.get(key) is not None:
        setattr(args, attr, info[key])
        taken.append(f"{flag} {show(info[key]) if show else info[key]}")


def resolve(args, info: dict | None) -> list[str]:
    """Fill the options the command line leaves unset from the run's ``run.json`` (``info``), else
    from the defaults. Returns what was taken from ``run.json``, as options (``--size 64x64``, ...).

    Sets ``args.val_ids`` to the run's validation ids when they decide the split (None otherwise)
    and ``args.train_ids`` to the run's training ids (None when unknown)."""
    info = info or {}
    taken = []
    _resolve_data(args, info, taken)
    args.colors = None
    if args.palette is None and info.get("colors") is not None:
        args.colors = [[int(v) for v in c] for c in info["colors"]]
        taken.append("the class colours")
    if info.get("binary"):  # a multi-class run's threshold means nothing
        _take(args, info, taken, "threshold", "threshold", "--threshold", lambda v: f"{v:g}")
    args.run_size = None
    if args.size is None and info.get("size"):
        args.run_size = "x".join(str(int(v)) for v in info["size"])
    args.binary_run = info.get("binary")
    args.train_ids = info.get("train_ids")
    _resolve_split(args, info, taken)
    return taken


def _resolve_data(args, info: dict, taken: list) -> None:
    """The data, its format (a folder of images/ and masks/ is folder data), the mask or folder options."""
    _take(args, info, taken, "data_format", "data_format", "--data-format")
    _take(args, info, taken, "data", "data", "--data")
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
            _take(args, info, taken, "mask", "mask", "--mask")
        args.mask = args.mask or "surfaces"
    else:
        if args.mask not in (None, "folder"):
            raise KsegError(f"--mask {args.mask} is for iccv09 data: folder data has its own masks "
                            f"(name classes with --classes or a palette file)")
        args.mask = "folder"
        _take(args, info, taken, "classes", "class_names", "--classes", lambda v: ",".join(map(str, v)))
        if "ignore_index" in info and info["ignore_index"] is None and args.ignore_index is None:
            args.ignore_index = NO_IGNORE  # the run had no ignore value (--ignore-index none)
            taken.append("--ignore-index none")
        elif info.get("ignore_index") != 255:  # the default needs no mention
            _take(args, info, taken, "ignore_index", "ignore_index", "--ignore-index")
    if args.data_format == "iccv09" and (args.classes or args.ignore_index is not None):
        raise KsegError("--classes and --ignore-index are for --data-format folder (iccv09's classes are "
                        "fixed by --mask)")


def _resolve_split(args, info: dict, taken: list) -> None:
    """The run's validation ids (when no option changes the split), else the split options; then the defaults."""
    args.val_ids = None
    user_split = args.split == "all" or any(v is not None for v in (args.val_split, args.fold, args.seed, args.limit))
    if args.split == "val" and not user_split and info.get("val_ids"):
        args.val_ids = list(info["val_ids"])
        args.limit = info.get("limit")
        taken.append(f"the split (the run's {len(args.val_ids)} validation images)")
    else:
        if args.val_split is None and args.fold is None and args.split == "val":
            _take(args, info, taken, "fold", "fold", "--fold")
            if args.fold is None:
                _take(args, info, taken, "val_split", "val_split", "--val-split", lambda v: f"{v:g}")
        if args.split == "val":
            _take(args, info, taken, "seed", "seed", "--seed")
        _take(args, info, taken, "limit", "limit", "--limit")
    if args.val_split is None:
        args.val_split = 0.2
    if args.seed is None:
        args.seed = 42


def _check_options(args) -> None:
    """Refuse option values that cannot work, before anything is loaded."""
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


def _check_data(args, info):
    data = args.data
    if data is None and args.data_format == "folder":
        raise KsegError("--data-format folder needs --data: a folder holding images/ and masks/")
    if data is not None and info is not None and data == info.get("data") and not Path(data).exists():
        raise KsegError(f"{data}: the run's data (from {info['_path']}) is not there: pass --data")


def _out_dir(args, model_path: Path) -> Path:
    if args.out:
        return Path(args.out)
    if model_path.is_dir():  # runs/x/saved_model -> runs/x/saved_model-eval
        return model_path.parent / f"{model_path.name}-eval"
    return model_path.parent / "eval"  # runs/x/best.keras -> runs/x/eval


def _threshold(args, info, taken, binary: bool, channels, threshold_given: bool, model_path) -> float:
    """A binary model's threshold (``--threshold``, else run.json's, else 0.5); refused for a multi-class one."""
    if binary and args.threshold is None and info is not None and info.get("threshold") is not None:
        args.threshold = info["threshold"]
        taken.append(f"--threshold {args.threshold:g}")
    if not binary and threshold_given:
        raise KsegError(f"{model_path}: --threshold is for binary models (one output channel); "
                        f"this one predicts {channels} classes")
    return 0.5 if args.threshold is None else float(args.threshold)


def _check_iccv09_model(args, binary: bool, channels, model_path) -> None:
    """Refuse a model that cannot be scored on iccv09's ``--mask`` labels."""
    from kseg.data import CLASS_NAMES

    n = len(CLASS_NAMES[args.mask])
    if binary:
        raise KsegError(f"{model_path}: a binary model (one output channel) cannot be scored on iccv09's "
                        f"{args.mask} labels ({n} classes): use --data-format folder")
    if channels not in (None, n):
        raise KsegError(f"{model_path}: the model predicts {channels} classes but --mask {args.mask} "
                        f"has {n}: was it trained for the other mask?")


def _select(args, info, ds, load):
    """``(dataset, positions, what the split is)``: the run's validation images, else the split asked for."""
    from kseg.evaldata import run_positions, split_positions

    if args.val_ids is not None:
        ds, idx = run_positions(ds, args.val_ids, args.limit, lambda: load(None))
        split = "the run's validation images"
    else:
        idx = split_positions(ds, args.split, args.fold, args.val_split, args.seed)
        split = f"fold {args.fold}" if args.fold is not None and args.split == "val" else f"{args.split} split"
        note = _split_note(args, info)
        if note:
            print(note, file=sys.stderr, flush=True)
    if len(idx) == 0:
        raise KsegError("no images to evaluate: use more images or --split all")
    return ds, idx, split


# --------------------------------------------------------------------------- the command


def run(args) -> dict:
    """Evaluate as the parsed ``args`` say; write the outputs and return the report."""
    from kseg.detection.evaluation import evaluate_instances_command
    if (report := evaluate_instances_command(args)) is not None:  # None: a semantic model
        return report
    from kseg.data import MASKS, check_size
    from kseg.evaldata import check_training_overlap, load_data, per_scale_scores, scoring_batches
    from kseg.runinfo import read_run_info

    _check_options(args)
    model_path = Path(args.model)
    info = read_run_info(model_path) if model_path.exists() else None
    threshold_given = args.threshold is not None
    taken = resolve(args, info)
    if args.data_format == "iccv09" and args.mask not in MASKS:
        raise KsegError(f"unknown --mask {args.mask!r}: choose one of {', '.join(MASKS)}")
    _check_data(args, info)
    out = _out_dir(args, model_path)
    t0 = time.time()
    predict, minfo = load_predictor(model_path, args.output_stride)
    channels = minfo.get("num_classes")
    binary = channels == 1 or (channels is None and bool(args.binary_run))
    threshold = _threshold(args, info, taken, binary, channels, threshold_given, model_path)
    if args.data_format == "iccv09":
        _check_iccv09_model(args, binary, channels, model_path)
    size = check_size(args.size or minfo["input_size"] or args.run_size or 224)
    if args.size is None and minfo["input_size"] is None and args.run_size:
        taken.append(f"--size {size[0]}x{size[1]}")
    names = _folder_names(args, binary, model_path) if args.data_format == "folder" else None
    if info is not None:
        print(f"kseg: from {info['_path']}: {', '.join(taken) if taken else 'nothing (the command line gives all)'}",
              file=sys.stderr, flush=True)
    ds, class_names, label, load = load_data(args.data_format, args.data, mask=args.mask, cache_dir=args.cache_dir,
                                             limit=args.limit, names=names, ignore_index=args.ignore_index,
                                             palette=args.palette, binary=binary, channels=channels,
                                             model_path=model_path)
    pp_opts = postprocess_options(args, class_names)
    ds, idx, split = _select(args, info, ds, load)
    ids = [ds.ids[i] for i in idx]
    training_scored = check_training_overlap(ids, args.train_ids)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KsegError(f"{out}: cannot create the output folder ({err.strerror})") from None
    native = args.native or args.scales is not None or args.flip
    predict, batches, how, scales = scoring_batches(predict, minfo, ds, idx, len(class_names), size, args.batch_size,
                                                    native, args.scales, args.flip, model_path)
    if args.output_stride is not None:
        how += f", output stride {args.output_stride}"
    if binary:
        how += f", binary: foreground where p >= {threshold:g}"
    print(f"kseg: evaluating {model_path} ({minfo['format']}) on {len(idx)} images "
          f"({split} of {len(ds)}, {label}) {how}", flush=True)
    res = evaluate(predict, batches, len(class_names), ids=ids, postprocess=pp_opts, worst=args.worst,
                   threshold=threshold, binary=binary)
    settings = _settings(args, info, taken, model_path, minfo, ds, size, scales, training_scored)
    settings.update(per_scale_scores(minfo, ds, idx, len(class_names), size, args.batch_size, native, scales,
                                     args.flip, threshold, binary))  # a multi-scale model's scales alone
    return _report(args, res, class_names, settings, binary, threshold, pp_opts, ds, label, out, t0)


def _settings(args, info, taken, model_path, minfo, ds, size, scales, training_scored) -> dict:
    """What report.json records of how the scores were made."""
    return {
        "model": str(model_path), "model_format": minfo["format"], "data": str(ds.root),
        "data_format": args.data_format, "mask": args.mask, "split": args.split,
        "split_from": "run.json val_ids" if args.val_ids is not None else ("assumed" if info is None else "options"),
        "val_split": args.val_split if args.split == "val" and args.val_ids is None else None, "seed": args.seed,
        "limit": args.limit, "size": list(size), "fold": args.fold, "native": scales is not None,
        "scales": list(scales) if scales else None, "flip": bool(args.flip), "output_stride": args.output_stride,
        "run_info": info["_path"] if info else None, "from_run_info": taken,
        "training_images_scored": training_scored,
    }


def _report(args, res, class_names, settings, binary, threshold, pp_opts, ds, label, out: Path, t0) -> dict:
    """Build, draw, write and print the report."""
    from kseg.reports import add_postprocess, build_report, picture_colors, write_pictures, write_report

    report = build_report(res, class_names, settings, binary, threshold)
    colors = picture_colors(args.palette, args.colors, getattr(ds, "colors", None), class_names, binary,
                            args.mask if args.data_format == "iccv09" else None, Path(args.model))
    post = add_postprocess(report, res, pp_opts, class_names)
    files = write_pictures(out, report, res, class_names, label, colors)
    report["files"] = files
    report["seconds"] = round(time.time() - t0, 2)
    write_report(out, report)
    print(format_table(report, post))
    print(f"kseg: wrote {', '.join(Path(p).name for p in files.values())} in {out}", flush=True)
    return report


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
