"""Train a segmentation model on iccv09: ``python -m kseg.train --mask surfaces``.

The defaults are the classic Colab tutorial's: U-Net with a resnet34 encoder
and no pretrained weights, 224x224, Adam (lr 1e-3), categorical cross-entropy,
batch 16, 20 epochs, an 80/20 split. Unlike the tutorial, label maps are
resized by nearest neighbour and unknown pixels are ignored by the loss and
the metrics.

The output folder (``--out``, default ``runs/<mask>-<model>-<backbone>``) gets:

- ``best.keras``        the best checkpoint (by ``--monitor``, default val_loss)
- ``history.csv``       one row per epoch (as Keras CSVLogger writes it)
- ``curves.png``        learning curves
- ``predictions.png``   input / truth / prediction for a few validation images
- ``metrics.json``      validation pixel accuracy, mIoU and per-class IoU of best.keras, and the
                        run's resolved options ("options")
- ``saved_model/``      a SavedModel whose serving function takes uint8 RGB images of any size,
                        with ``model.tflite`` inside (see kseg.export)

Running the same command again resumes an interrupted (even killed) run from
its last finished epoch: ``<out>/.backup`` holds the weights and the optimizer's
state after each epoch, and is removed once every output is written. Every
file a later run trusts (``best.keras``, the resume state, ``history.csv``,
``metrics.json``, the SavedModel) is written under a temporary name and
renamed. A loss that becomes NaN stops the run with an error; ``best.keras``
and the resume state then still hold the last good epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from kseg.errors import KsegError, atomic_path, cli_entry, write_text_atomic
from kseg.precision import PRECISIONS
from kseg.runinfo import RUN_FILE, write_run_info

DEFAULTS = dict(mask="surfaces", model="unet", backbone="resnet34", loss="ce", epochs=20, batch_size=16,
                size="224", lr=1e-3, val_split=0.2, seed=42)


def parse_args(argv=None) -> argparse.Namespace:
    from kseg import recipes

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=None)
    known, _ = pre.parse_known_args(argv)
    p = argparse.ArgumentParser(prog="python -m kseg.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", default=None, choices=sorted(recipes.RECIPES),
                   help="a named preset of the options below (see kseg.recipes); options given here win")
    p.add_argument("--mask", default=DEFAULTS["mask"], help="regions (8 classes) or surfaces (3 classes)")
    p.add_argument("--data", default=None, help="iccv09Data folder or iccv09Data.tar.gz (default: find or download); "
                                                "with --data-format folder: a folder holding images/ and masks/")
    p.add_argument("--data-format", choices=("iccv09", "folder"), default="iccv09",
                   help="folder: your own images/ + masks/ (see kseg.data.folder; palette.json or classes.txt "
                        "in the folder name the classes)")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="folder data: class names, comma-separated (id 0 first) or a text file with one a line; "
                        "default: palette.json, classes.txt, or what the masks hold")
    p.add_argument("--palette", default=None, metavar="FILE",
                   help="folder data: a palette file (JSON or text) naming each class and its colour, needed "
                        "for RGB colour masks whose colours are not to be taken as found")
    p.add_argument("--ignore-index", default="255", metavar="ID",
                   help="folder data: the mask value that marks unknown pixels, or 'none'")
    p.add_argument("--binary", action=argparse.BooleanOptionalAction, default=None,
                   help="folder data: train foreground against background (one sigmoid output); default: "
                        "detected from masks that hold two values, such as 0/255 or 0/1")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="binary models: the foreground probability from which a pixel is foreground")
    p.add_argument("--overwrite", action="store_true",
                   help="train over a finished run in --out (its outputs are removed first); without it, "
                        "a finished run is never overwritten")
    p.add_argument("--model", default=DEFAULTS["model"], help="architecture (see kseg.models.list_models())")
    p.add_argument("--backbone", default=DEFAULTS["backbone"], help="encoder (see kseg.models.list_backbones())")
    p.add_argument("--encoder-weights", default=None, help="none, imagenet, or a weights file")
    p.add_argument("--encoder-freeze", action="store_true", help="do not train the encoder")
    p.add_argument("--freeze-epochs", type=int, default=0,
                   help="train with the encoder frozen (BatchNorm in inference mode) for this many epochs, "
                        "then unfreeze it")
    p.add_argument("--freeze-encoder-bn", action="store_true",
                   help="keep the encoder's BatchNorm layers in inference mode (ImageNet statistics, scale and "
                        "offset fixed) while the rest of the encoder trains: DeepLab's fine_tune_batch_norm=False, "
                        "advised for small batches (< 12) on a pretrained encoder")
    p.add_argument("--encoder-lr-mult", type=float, default=1.0, metavar="M",
                   help="the encoder's learning rate (and weight decay) as a fraction of --lr, e.g. 0.1 to "
                        "fine-tune a pretrained encoder more gently than the new decoder (PyTorch parameter "
                        "groups, mmseg's lr_mult); 1 = one rate for all")
    p.add_argument("--bn-momentum", type=float, default=None,
                   help="momentum of every BatchNorm's moving statistics (Keras builds 0.99, keras.applications "
                        "MobileNetV2 0.999; 0.9 = PyTorch's 0.1 adapts within tens of steps, so short runs "
                        "validate well); default: as built")
    p.add_argument("--loss", default=DEFAULTS["loss"], help="ce, dice, focal, or a sum like dice+focal")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="passes over the training images")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images per training step")
    p.add_argument("--size", default=DEFAULTS["size"], help="H or HxW, multiples of 32")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="(peak) learning rate")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                   help="adam, adamw (decoupled weight decay) or sgd (momentum 0.9)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay for adamw and sgd")
    p.add_argument("--schedule", choices=("constant", "cosine", "poly"), default="constant",
                   help="learning-rate schedule over the whole run (see kseg.schedules)")
    p.add_argument("--warmup", type=float, default=0.0, help="epochs of linear learning-rate warm-up")
    p.add_argument("--ema", type=float, default=None, metavar="MOMENTUM",
                   help="keep an exponential moving average of the trained weights (Polyak averaging, "
                        "Keras's use_ema) with this momentum per step, e.g. 0.99; validation, best.keras, "
                        "the final evaluation and the export use the averaged weights")
    p.add_argument("--class-weights", default="none",
                   help="none, balanced (n/(C*n_c)), median (median frequency balancing), sqrt "
                        "(1/sqrt(frequency)), or one number per class, e.g. 1,1,2; counted on the training images")
    p.add_argument("--repeat-threshold", type=float, default=0.0, metavar="T",
                   help="repeat-factor sampling for rare classes (LVIS, detectron2's REPEAT_THRESHOLD): an image "
                        "is drawn max(1, sqrt(T/f)) times as often, f = the fraction of training images holding "
                        "its rarest class; epochs keep their length; 0 = off")
    p.add_argument("--val-split", type=float, default=DEFAULTS["val_split"],
                   help="the fraction of images held out for validation (a seeded random split)")
    p.add_argument("--fold", type=int, default=None, choices=range(5), metavar="K",
                   help="iccv09 only: validate on fold K (0-4) of kseg's fixed 5-fold split (572/143), "
                        "instead of --val-split")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed of the split, the shuffling, the augmentation and the initial weights")
    p.add_argument("--augment", default="none",
                   help="none, flip, scale (x0.5-2 and crop), color, strong (= scale,flip,color), or several "
                        "joined by commas")
    p.add_argument("--sparse", action="store_true", help="sparse targets (255 = ignored) instead of one-hot")
    p.add_argument("--monitor", default="val_loss", help="quantity that picks best.keras (e.g. val_miou)")
    p.add_argument("--eval-scales", default=None,
                   help="also score best.keras at each image's native resolution with these test-time "
                        "scales, e.g. 0.75,1,1.25 (metrics.json 'native')")
    p.add_argument("--eval-flip", action="store_true", help="add flipped copies to that native evaluation")
    p.add_argument("--eval-output-stride", type=int, default=None, choices=(8, 16, 32), metavar="N",
                   help="run that native evaluation at output stride N (DeepLabV3+ trained at 16: 8 gives "
                        "denser features for more compute)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (quick tries)")
    p.add_argument("--out", default=None, help="output folder (default runs/<mask>-<model>-<backbone>)")
    p.add_argument("--jit-compile", choices=("auto", "on", "off"), default="off", help="XLA compilation")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="mixed_bfloat16: compute in bfloat16 with float32 weights, about 1.3x faster training on "
                        "CPUs with bfloat16 instructions (avx512_bf16 or AMX) and recent GPUs, several times "
                        "slower on others; evaluation and the export run in float32 either way")
    p.add_argument("--strategy", default="auto",
                   help="tf.distribute strategy: auto, none, mirrored (this machine's GPUs), multiworker "
                        "(machines named in TF_CONFIG) or tpu; auto is multiworker with a TF_CONFIG cluster, "
                        "else mirrored with more than one GPU, else none; --batch-size is the global batch")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--no-tflite", action="store_true", help="export the SavedModel without saved_model/model.tflite")
    p.add_argument("--cache-dir", default=None, help="where parsed labels are cached")
    p.add_argument("--verbose", type=int, default=None, help="Keras verbosity (default: progress bar on a tty)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    if known.recipe is not None:
        p.set_defaults(**recipes.get(known.recipe))
    args = p.parse_args(argv)
    return validate(args)


def validate(args):
    from kseg.data import MASKS, check_size

    if args.mask not in MASKS:
        raise KsegError(f"unknown --mask {args.mask!r}: choose one of {', '.join(MASKS)}")
    if args.epochs < 1:
        raise KsegError(f"bad --epochs {args.epochs}: give a positive integer")
    if args.batch_size < 1:
        raise KsegError(f"bad --batch-size {args.batch_size}: give a positive integer")
    if not 0.0 < args.val_split < 1.0:
        raise KsegError(f"bad --val-split {args.val_split}: give a fraction between 0 and 1, e.g. 0.2")
    from kseg.distribute import STRATEGIES

    if args.strategy not in STRATEGIES:
        raise KsegError(f"unknown --strategy {args.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise KsegError(f"bad --lr {args.lr}: give a positive number")
    if args.bn_momentum is not None and not 0.0 <= args.bn_momentum < 1.0:
        raise KsegError(f"bad --bn-momentum {args.bn_momentum}: give a number in [0, 1), e.g. 0.9")
    if args.freeze_epochs < 0:
        raise KsegError(f"bad --freeze-epochs {args.freeze_epochs}: give 0 or a positive integer")
    if args.freeze_encoder_bn and str(args.encoder_weights).lower() in ("none", ""):
        print("kseg: warning: --freeze-encoder-bn without pretrained encoder weights keeps the encoder's "
              "BatchNorm layers at their initial statistics (no normalisation)", file=sys.stderr)
    if not (args.encoder_lr_mult > 0 and math.isfinite(args.encoder_lr_mult)):
        raise KsegError(f"bad --encoder-lr-mult {args.encoder_lr_mult}: give a positive number, e.g. 0.1")
    if args.encoder_lr_mult != 1.0 and args.encoder_freeze:
        raise KsegError("--encoder-lr-mult scales the encoder's learning rate, but --encoder-freeze does not train "
                        "it: drop one of the two")
    if args.ema is not None and not 0.0 < args.ema < 1.0:
        raise KsegError(f"bad --ema {args.ema}: give a momentum between 0 and 1, e.g. 0.99")
    if not (args.repeat_threshold >= 0 and math.isfinite(args.repeat_threshold)):
        raise KsegError(f"bad --repeat-threshold {args.repeat_threshold}: give 0 (off) or a fraction of images, "
                        "e.g. 0.5")
    if not (args.warmup >= 0 and math.isfinite(args.warmup)):
        raise KsegError(f"bad --warmup {args.warmup}: give 0 or a positive number of epochs")
    if not (args.weight_decay >= 0 and math.isfinite(args.weight_decay)):
        raise KsegError(f"bad --weight-decay {args.weight_decay}: give 0 or a positive number")
    if args.weight_decay and args.optimizer == "adam":
        raise KsegError("--weight-decay needs --optimizer adamw or sgd")
    if args.fold is not None and args.data_format != "iccv09":
        raise KsegError("--fold picks kseg's iccv09 5-fold split: use --val-split with --data-format folder")
    from kseg.data.augment import get as get_augment

    get_augment(args.augment)  # a bad name fails before any loading
    if args.eval_scales is not None:
        from kseg.predict import parse_scales

        args.eval_scales = parse_scales(args.eval_scales)
    args.size = check_size(args.size)
    if args.encoder_weights in ("none", "None", ""):
        args.encoder_weights = None
    if args.out is None:
        args.out = os.path.join("runs", f"{args.mask if args.data_format == 'iccv09' else 'folder'}-{args.model}-"
                                        f"{args.backbone}")
    if args.data_format == "folder" and not args.data:
        raise KsegError("--data-format folder needs --data: a folder holding images/ and masks/")
    folder_only = [f"--{k.replace('_', '-')}" for k in ("classes", "palette", "binary")
                   if getattr(args, k) is not None]
    if args.ignore_index != "255":
        folder_only.append("--ignore-index")
    if folder_only and args.data_format != "folder":
        raise KsegError(f"{', '.join(folder_only)}: for your own data (--data-format folder); iccv09's classes "
                        f"are fixed by --mask")
    args.ignore_index = parse_ignore_index(args.ignore_index)
    if not 0.0 < args.threshold < 1.0:
        raise KsegError(f"bad --threshold {args.threshold}: give a probability between 0 and 1, e.g. 0.5")
    return args


def parse_ignore_index(text):
    """``--ignore-index``: an id in 0..65535, or None for 'none'."""
    if text is None or str(text).strip().lower() in ("none", ""):
        return None
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= 65535:
        raise KsegError(f"bad --ignore-index {text!r}: give the mask value of unknown pixels (e.g. 255) or none")
    return v


def parse_classes(spec):
    """``--classes``: comma-separated names, or a text file with one name a line; None stays None."""
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        try:
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise KsegError(f"{path}: cannot read the class names ({err})") from None
    else:
        names = [n.strip() for n in str(spec).split(",") if n.strip()]
    if not names:
        raise KsegError(f"bad --classes {spec!r}: give names separated by commas, or a file with one a line")
    if len(set(names)) != len(names):
        raise KsegError(f"bad --classes {spec!r}: a class name appears twice")
    return names


def _read_history(csv_path: Path, before_epoch: int) -> list[dict]:
    """The rows of an existing ``history.csv`` for epochs before ``before_epoch`` (a resumed run's past).

    Rows of later epochs (an epoch that was logged but whose resume state was
    not saved before a kill) are dropped: that epoch runs again and is logged once.
    """
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise KsegError(f"{csv_path}: cannot read the history of the run to resume ({err})") from None
    try:
        return [r for r in rows if int(r["epoch"]) < before_epoch]
    except (KeyError, TypeError, ValueError):
        raise KsegError(f"{csv_path}: not a kseg history (no integer epoch column); "
                        f"move it away to resume") from None


def _best_so_far(rows: list[dict], monitor: str) -> tuple[float | None, int | None]:
    """The best finite ``monitor`` value in a resumed run's history and its epoch ((None, None) if none)."""
    vals = []
    for r in rows:
        try:
            v = float(r.get(monitor) or "nan")
        except ValueError:
            continue
        if math.isfinite(v):
            vals.append((v, int(r["epoch"])))
    if not vals:
        return None, None
    return min(vals) if _mode(monitor) == "min" else max(vals, key=lambda t: (t[0], -t[1]))


def _mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def run(args) -> dict:
    """Train as the parsed ``args`` say; return the validation metrics of the best model.

    With ``args.ema`` the optimizer keeps a moving average of the trained weights, and Keras's
    ``SwapEMAWeights`` puts the averaged weights in the model while it validates; ``best.keras`` is saved
    with them (so the final evaluation and the export use them), and the resume state keeps the trained
    weights with their average (in the optimizer's state), so a resumed run goes on as if never stopped.

    The model trains under Keras's dtype policy ``args.precision`` (restored afterwards); what is evaluated
    and exported at the end is best.keras's float32 copy (:func:`kseg.export.load_model`)."""
    from kseg import precision
    from kseg.distribute import gpus

    note = precision.warning(args.precision, gpus=len(gpus())) if args.precision != "float32" else None
    if note:
        print(note, file=sys.stderr, flush=True)
    with precision.policy(args.precision):
        return _run(args)


def _run(args) -> dict:
    """:func:`run` under its dtype policy."""
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise KsegError(f"{out}: output folder is not writable ({err.strerror})") from None
    clear_finished_run(out, args.overwrite)

    from kseg import distribute

    strategy = distribute.get_strategy(args.strategy)  # first: multi-worker collectives are set up at start-up
    chief = distribute.is_chief(strategy)
    if not chief:  # every worker saves what the chief saves (saving may read distributed variables), elsewhere
        out = distribute.worker_dir(out, chief=False)
        out.mkdir(parents=True, exist_ok=True)
    if strategy is not None:
        print(f"kseg: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replicas; "
              f"global batch {args.batch_size}", flush=True)

    import keras
    import numpy as np

    from kseg import losses as klosses
    from kseg import metrics as kmetrics
    from kseg import models
    from kseg.data import iccv09_datasets

    keras.utils.set_random_seed(args.seed)
    t0 = time.time()
    if args.data_format == "folder":
        from kseg.data import folder
        from kseg.data.pipeline import split_datasets

        opts = {"binary": args.binary} if args.binary is not None else {}
        ds = folder(args.data, class_names=parse_classes(args.classes), palette=args.palette,
                    ignore_index=args.ignore_index, limit=args.limit, **opts)
        if getattr(ds, "binary", False) and (args.sparse or args.class_weights != "none"):
            raise KsegError(f"{args.data}: binary masks (foreground against background) train one sigmoid "
                            f"output: --sparse and --class-weights are for multi-class data; for a rare "
                            f"foreground use --loss focal or dice+bce")
        train_ds, val_ds, info = split_datasets(ds, args.size, args.batch_size, args.val_split, args.seed,
                                                args.sparse, args.augment,
                                                repeat_threshold=args.repeat_threshold)
    else:
        train_ds, val_ds, info = iccv09_datasets(args.data, mask=args.mask, size=args.size,
                                                 batch_size=args.batch_size, val_split=args.val_split,
                                                 seed=args.seed, sparse=args.sparse, augment=args.augment,
                                                 limit=args.limit, cache_dir=args.cache_dir, quiet=False,
                                                 fold=args.fold, repeat_threshold=args.repeat_threshold)
    ds = info["dataset"]
    binary = bool(getattr(ds, "binary", False))
    print(f"kseg: {len(ds)} images from {ds.root} ({ds.mask}: "
          f"{'binary, ' + ds.class_names[1] + ' against ' + ds.class_names[0] if binary else f'{ds.num_classes} classes'}), "
          f"{len(info['train_idx'])} train / {len(info['val_idx'])} validation"
          f"{f' (fold {args.fold})' if args.fold is not None else ''}, "
          f"{args.size[0]}x{args.size[1]}, loaded in {time.time() - t0:.1f}s"
          + (f" (skipped {len(ds.skipped)} unreadable image(s))" if getattr(ds, "skipped", None) else ""),
          flush=True)
    if info.get("repeat_factors") is not None:
        print(f"kseg: repeat-factor sampling (--repeat-threshold {args.repeat_threshold:g}): "
              + repeat_summary(ds.class_names, info["class_repeat_factors"], info["class_images"],
                               info["repeat_factors"]), flush=True)

    if strategy is not None:
        train_ds, val_ds = distribute.shard_by_data(train_ds), distribute.shard_by_data(val_ds)
    with distribute.scope(strategy):  # model, optimizer and metrics live on every replica
        model = models.build(args.model, backbone=args.backbone, num_classes=1 if binary else ds.num_classes,
                             activation="sigmoid" if binary else "softmax",
                             input_shape=(*args.size, 3), encoder_weights=args.encoder_weights,
                             encoder_freeze=(args.encoder_freeze or args.freeze_epochs > 0 or args.freeze_encoder_bn
                                             or args.encoder_lr_mult != 1.0))
        if args.eval_output_stride:  # a model that cannot run at that stride fails now, not after training
            models.with_output_stride(model, args.eval_output_stride)
        encoder = [la for la in model.layers if not la.trainable]  # frozen by build, if asked to
        lr_multipliers = encoder_lr_multipliers(encoder, args.encoder_lr_mult, args.freeze_encoder_bn)
        # what --freeze-epochs thaws later
        thaw = [] if args.encoder_freeze else encoder
        if thaw and args.freeze_epochs == 0:  # the encoder trains from the start
            thaw_encoder(thaw, keep_bn_frozen=args.freeze_encoder_bn)
            thaw = []
        if lr_multipliers:
            print(f"kseg: encoder learning rate x{args.encoder_lr_mult:g} ({len(lr_multipliers)} variables)",
                  flush=True)
        if args.bn_momentum is not None:
            set_bn_momentum(model, args.bn_momentum)
        distribute.sync_batch_norm(model, strategy)
        weights = class_weights(args.class_weights, [ds.labels[i] for i in info["train_idx"]], ds.num_classes)
        if weights is not None:
            print("kseg: class weights " + ", ".join(f"{n} {w:.2f}" for n, w in zip(ds.class_names, weights)),
                  flush=True)
        loss = klosses.get(args.loss, **({"class_weights": weights} if weights is not None else {}))
        if args.sparse:
            loss = SparseAdapter(loss, ds.num_classes)
        jit = {"auto": "auto", "on": True, "off": False}[args.jit_compile]
        metrics = ([kmetrics.PixelAccuracy(2, threshold=args.threshold), kmetrics.MeanIoU(2, threshold=args.threshold),
                    kmetrics.IoU(2, class_id=1, name="iou_foreground", threshold=args.threshold)] if binary else
                   [kmetrics.PixelAccuracy(ds.num_classes), kmetrics.MeanIoU(ds.num_classes)])
        steps = info["steps_per_epoch"]
        optimizer = make_optimizer(args, total_steps=args.epochs * steps, warmup_steps=round(args.warmup * steps),
                                   late_variables=bool(thaw), lr_multipliers=lr_multipliers)
        model.compile(optimizer=optimizer, loss=distribute.replica_loss(loss, strategy),
                      metrics=metrics, jit_compile=jit)
        if thaw:  # the optimizer holds state for the encoder's variables from the start (resume, unfreezing)
            with thawed(thaw, keep_bn_frozen=args.freeze_encoder_bn):
                model.optimizer.build(model.trainable_variables)
        distribute.build_for_fit(model, strategy, train_ds)

    backup = out / ".backup"
    history_csv = out / "history.csv"
    best_path = out / "best.keras"
    config = {"data_format": args.data_format, "mask": ds.mask, "model": args.model, "backbone": args.backbone,
              "size": list(args.size), "classes": ds.num_classes, "fold": args.fold}
    if binary:  # a binary run's model has one output channel
        config["binary"] = True
    run_info = {"data": str(Path(args.data).resolve()) if args.data else str(ds.root),
                "data_format": args.data_format, "mask": ds.mask, "class_names": list(ds.class_names),
                "colors": None if getattr(ds, "colors", None) is None else np.asarray(ds.colors).tolist(),
                "binary": binary, "threshold": args.threshold if binary else None,
                "ignore_index": args.ignore_index if args.data_format == "folder" else None,
                "size": list(args.size), "val_split": args.val_split, "seed": args.seed, "fold": args.fold,
                "limit": args.limit, "train_ids": [ds.ids[i] for i in info["train_idx"]],
                "val_ids": [ds.ids[i] for i in info["val_idx"]], "model": args.model, "backbone": args.backbone,
                "recipe": args.recipe, "finished": False}
    if chief:
        write_run_info(out, run_info)
    if args.ema:  # the optimizer's state then holds the averages: resuming needs the same
        config["ema"] = args.ema
    state = read_resume_state(backup, config)
    initial_epoch = 0
    if state is not None:
        with distribute.scope(strategy):
            initial_epoch = restore_resume_state(model, backup, state, args.lr)
        print(f"kseg: resuming from {backup} at epoch {initial_epoch + 1} of {args.epochs}", flush=True)
    rows = _read_history(history_csv, initial_epoch) if state is not None else []
    # with --ema, validation (Keras swaps on test begin/end) and best.keras see the averaged weights
    swap = keras.callbacks.SwapEMAWeights() if args.ema else None
    recorder = RunRecorder(history_csv, rows, best_path, args.monitor, *_best_so_far(rows, args.monitor),
                           last_good_epoch=initial_epoch - 1 if initial_epoch else None, ema=swap,
                           thaw=thaw, keep_bn_frozen=args.freeze_encoder_bn)
    callbacks = [recorder, CurvesCallback(history_csv, out / "curves.png"),
                 ResumeState(backup, config, recorder)]
    if swap is not None:
        callbacks.insert(0, swap)
    if thaw:
        callbacks.insert(0, Unfreeze(thaw, args.freeze_epochs, keep_bn_frozen=args.freeze_encoder_bn))
    fit_val = val_ds
    if distribute.multi_worker(strategy) and val_ds is not None:  # each worker validates on the whole set
        callbacks.insert(0, distribute.local_validation(val_ds, loss, metrics, ema=swap))
        fit_val = None
    verbose = args.verbose if args.verbose is not None else ("auto" if sys.stdout.isatty() else 2)
    if initial_epoch < args.epochs:
        import tensorflow as tf

        try:
            model.fit(train_ds, steps_per_epoch=info["steps_per_epoch"], epochs=args.epochs,
                      initial_epoch=initial_epoch, validation_data=fit_val, callbacks=callbacks,
                      verbose=verbose, shuffle=False)
        except tf.errors.InvalidArgumentError as err:
            if "IteratorGetNext" not in str(err):
                raise
            detail = next((ln for ln in str(err).splitlines() if "Error in user-defined" in ln or "failed" in ln),
                          str(err).splitlines()[0])
            raise KsegError(f"{ds.root}: a file could not be read during training ({detail.strip()[-200:]}); "
                            f"the last finished epoch is kept: fix or remove the file and run again "
                            f"to resume") from None
    if recorder.nan_at is not None:
        epoch, batch = recorder.nan_at
        kept = (f"the last good checkpoint {best_path} (epoch {recorder.best_epoch + 1}) is kept"
                if recorder.best_epoch is not None else f"no checkpoint was better before it, so {best_path} "
                                                        f"was not written")
        resume = (f"running again (with a lower --lr, say) resumes after epoch {recorder.last_good_epoch + 1}"
                  if recorder.last_good_epoch is not None else "run again with a lower --lr")
        raise KsegError(f"{history_csv}: the loss became NaN in epoch {epoch + 1}, batch {batch + 1}; "
                        f"training stopped (--lr {args.lr:g}): {kept}; {resume}")

    if not chief:
        shutil.rmtree(out, ignore_errors=True)
        distribute.barrier(strategy)  # wait for the chief's outputs
        print("kseg: worker finished; the chief wrote the outputs", flush=True)
        return {}

    from kseg.export import export_saved_model, load_model
    from kseg.models.layers import float32_copy

    best = load_model(best_path) if best_path.exists() else float32_copy(model)
    skipped = list(getattr(ds, "skipped", []) or [])
    extra = {"mask": ds.mask, "model": args.model, "backbone": args.backbone, "epochs": args.epochs,
             "size": list(args.size), "train_images": len(info["train_idx"]), "val_images": len(info["val_idx"]),
             "skipped_images": skipped, "fold": args.fold, "recipe": args.recipe,
             "seconds": round(time.time() - t0, 1), "options": run_options(args)}
    if args.eval_scales is not None or args.eval_flip or args.eval_output_stride:
        from kseg.evaluate import evaluate_native
        from kseg.models import with_output_stride

        scales = args.eval_scales or (1.0,)
        t1 = time.time()
        dense = with_output_stride(best, args.eval_output_stride) if args.eval_output_stride else best
        native = evaluate_native(dense, [ds.image_paths[i] for i in info["val_idx"]],
                                 [ds.labels[i] for i in info["val_idx"]], ds.class_names, scales=scales,
                                 flip=args.eval_flip, size=args.size, threshold=args.threshold)
        native.update(scales=list(scales), flip=bool(args.eval_flip), output_stride=args.eval_output_stride,
                      seconds=round(time.time() - t1, 1))
        extra["native"] = native
        stride = f", output stride {args.eval_output_stride}" if args.eval_output_stride else ""
        print(f"kseg: at native resolution with scales {','.join(f'{v:g}' for v in scales)}"
              f"{' and flips' if args.eval_flip else ''}{stride}: pixel accuracy {native['pixel_accuracy']:.4f}, "
              f"mean class accuracy {native['mean_accuracy']:.4f}, mIoU {native['miou']:.4f}", flush=True)
    threshold = args.threshold if binary else None
    report = evaluate_to_json(best, val_ds, ds.class_names, out / "metrics.json", extra=extra, threshold=threshold)
    save_predictions(best, ds, info["val_idx"], args.size, out / "predictions.png", threshold=threshold)
    if not args.no_export:
        export_saved_model(best, out / "saved_model", tflite=not args.no_tflite)
    else:  # a SavedModel of an earlier model would be out of step with this best.keras
        shutil.rmtree(out / "saved_model", ignore_errors=True)
    write_run_info(out, {**run_info, "finished": True})
    shutil.rmtree(backup, ignore_errors=True)  # every output is written: nothing left to resume
    note = f"; skipped {len(skipped)} unreadable image(s): {_names(skipped)}" if skipped else ""
    fg = (f", foreground IoU {report['iou'][ds.class_names[1]] or 0.0:.4f} (threshold {args.threshold:g})"
          if binary else "")
    print(f"kseg: validation pixel accuracy {report['pixel_accuracy']:.4f}, mIoU {report['miou']:.4f}{fg} "
          f"(best.keras); outputs in {out}{note}", flush=True)
    np.random.seed(None)
    distribute.barrier(strategy)  # the other workers wait for these outputs
    return report


def run_options(args) -> dict:
    """Every option of the run as it was resolved (recipe defaults, then the command line), JSON-ready: what
    metrics.json records so that a score says how it was trained."""
    plain = (str, int, float, bool, type(None))
    return {k: (v if isinstance(v, plain) else list(v) if isinstance(v, (list, tuple))
                and all(isinstance(x, plain) for x in v) else str(v)) for k, v in sorted(vars(args).items())}


def make_optimizer(args, total_steps: int, warmup_steps: int = 0, late_variables: bool = False,
                   lr_multipliers: dict | None = None):
    """The optimizer ``args`` ask for, with its learning-rate schedule (see :mod:`kseg.schedules`): Adam, AdamW
    or SGD (momentum 0.9) from :mod:`kseg.optimizers` (Keras's, Adam's with TensorFlow's fused update kernel).
    With ``late_variables`` (an encoder that ``--freeze-epochs`` unfreezes later) Adam counts its steps per
    variable, so the encoder's first updates have Adam's usual size. ``lr_multipliers`` ({variable path:
    factor}, see :func:`encoder_lr_multipliers`) scale those variables' learning rate. ``args.ema`` (a momentum)
    turns on Keras's moving average of the weights (``use_ema``; see :func:`run` for where the averaged weights
    are used)."""
    from kseg import optimizers, schedules

    lr = schedules.make(args.schedule, args.lr, total_steps, warmup_steps)
    kw = dict(use_ema=True, ema_momentum=float(args.ema)) if args.ema else {}
    if lr_multipliers:
        kw["lr_multipliers"] = lr_multipliers
    if args.optimizer == "adamw":
        return optimizers.AdamW(lr, weight_decay=args.weight_decay, per_variable_steps=late_variables, **kw)
    if args.optimizer == "sgd":
        return optimizers.SGD(lr, momentum=0.9, weight_decay=args.weight_decay or None, **kw)
    return optimizers.Adam(lr, per_variable_steps=late_variables, **kw)


def encoder_lr_multipliers(encoder, factor: float, keep_bn_frozen: bool = False) -> dict:
    """``{variable path: factor}`` for every variable of the ``encoder`` layers that trains once they are thawed
    (with ``keep_bn_frozen``, BatchNorm's scale and offset do not); ``{}`` for factor 1. The layers' trainable
    flags are left as they were (frozen ones are thawed only to list their variables)."""
    if factor == 1.0:
        return {}
    if not encoder:
        raise KsegError("--encoder-lr-mult: this model has no encoder layers to scale")
    with thawed(encoder, keep_bn_frozen):
        return {v.path: float(factor) for la in encoder for v in la.trainable_weights}


def set_bn_momentum(model, momentum: float) -> int:
    """Set the moving-statistics momentum of every BatchNormalization in ``model`` (nested ones too)."""
    from kseg.models.layers import batch_norm_layers

    bns = batch_norm_layers(model)
    for layer in bns:
        layer.momentum = float(momentum)
    return len(bns)


def repeat_summary(class_names, class_factors, class_images, image_factors) -> str:
    """One line on what ``--repeat-threshold`` does (the factors :func:`kseg.data.split_datasets` puts in its
    ``info``): each repeated class's factor and image count, and the mean image factor (how much more often a
    training image is drawn, on average)."""
    parts = [f"{name} x{r:.2f} ({n} images)" for name, r, n in zip(class_names, class_factors, class_images)
             if r > 1.0]
    mean = f"; mean image factor {image_factors.mean():.2f}"
    return (", ".join(parts) or "no class is rarer than the threshold") + mean


def class_weights(spec, labels, num_classes: int):
    """Per-class loss weights from ``spec`` (see ``--class-weights``), counted on ``labels``; None for none."""
    import numpy as np

    if spec is None or str(spec).lower() == "none":
        return None
    spec = str(spec).lower()
    if spec not in ("balanced", "median", "sqrt"):
        try:
            vals = [float(v) for v in spec.split(",")]
        except ValueError:
            raise KsegError(f"bad --class-weights {spec!r}: give none, balanced, median, sqrt or "
                            f"{num_classes} numbers separated by commas") from None
        if len(vals) != num_classes or any(not (v >= 0 and math.isfinite(v)) for v in vals):
            raise KsegError(f"bad --class-weights {spec!r}: give {num_classes} non-negative numbers")
        return vals
    counts = np.zeros(num_classes, np.int64)
    for lab in labels:
        lab = np.asarray(lab).ravel()
        counts += np.bincount(lab[(lab >= 0) & (lab < num_classes)].astype(np.int64), minlength=num_classes)
    freq = counts / max(int(counts.sum()), 1)
    present = freq > 0
    w = np.zeros(num_classes)
    if spec == "balanced":
        w[present] = 1.0 / (present.sum() * freq[present])
    elif spec == "median":
        w[present] = np.median(freq[present]) / freq[present]
    else:
        w[present] = 1.0 / np.sqrt(freq[present])
        w[present] /= w[present].mean()
    return [float(v) for v in w]


def thaw_encoder(layers_, keep_bn_frozen: bool = False) -> None:
    """Make ``layers_`` (and the layers nested in them) trainable; with ``keep_bn_frozen`` their
    BatchNormalization layers stay non-trainable, so they keep running in inference mode."""
    from kseg.models.layers import batch_norm_layers, freeze

    freeze(layers_, trainable=True)
    if keep_bn_frozen:
        for la in layers_:
            for bn in batch_norm_layers(la):
                bn.trainable = False


@contextlib.contextmanager
def thawed(layers_, keep_bn_frozen: bool = False):
    """Inside the block, those of ``layers_`` that are frozen are thawed (see :func:`thaw_encoder`); after
    it, frozen again (layers already trainable are left as they are)."""
    frozen = [la for la in layers_ if not la.trainable]
    thaw_encoder(frozen, keep_bn_frozen)
    try:
        yield
    finally:
        for la in frozen:
            la.trainable = False


class Unfreeze:
    """At the start of epoch ``at`` make ``layers`` trainable again (see :func:`thaw_encoder`) and rebuild
    the train step."""

    def __new__(cls, layers_, at: int, keep_bn_frozen: bool = False):
        import keras

        from kseg.models.layers import batch_norm_layers

        bns = {id(bn) for la in layers_ for bn in batch_norm_layers(la)} if keep_bn_frozen else set()

        def is_thawed(la):
            return la.trainable or id(la) in bns

        class _Unfreeze(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch >= at and not all(is_thawed(la) for la in layers_):
                    thaw_encoder(layers_, keep_bn_frozen)
                    self.model.make_train_function(force=True)
                    print(f"\nkseg: epoch {epoch + 1}: the encoder is unfrozen", flush=True)

        return _Unfreeze()


class SparseAdapter:
    """Feed sparse targets (255 = ignored) to a loss written for one-hot targets."""

    def __new__(cls, loss, num_classes):
        import keras

        from kseg.data.pipeline import to_one_hot

        class _Sparse(keras.losses.Loss):
            def __init__(self):
                super().__init__(name=loss.name)

            def call(self, y_true, y_pred):
                y = y_true[..., 0] if len(y_true.shape) == len(y_pred.shape) else y_true
                return loss.call(to_one_hot(y, num_classes), y_pred)

        return _Sparse()


def evaluate_to_json(model, val_ds, class_names, path, extra=None, threshold=None) -> dict:
    """Confusion matrix of ``model`` over ``val_ds`` (:func:`kseg.evaluate.evaluate`) → scores → ``path`` (JSON).

    ``threshold``: a binary model's (one sigmoid output) foreground threshold; its targets are one channel of
    0 / 1 with any other value unknown, and its confusion matrix is 2 x 2 (background, foreground)."""
    import numpy as np

    from kseg.evaluate import evaluate
    from kseg.metrics import scores

    c = len(class_names)

    def batches():
        for x, y in val_ds:
            y = y.numpy()
            if threshold is not None:  # binary: 0, 1, anything else unknown
                y = y[..., 0] if y.ndim == 4 else y
                y = np.where((y == 0) | (y == 1), y, -1).astype(np.int64)
            elif y.ndim == 4 and y.shape[-1] == c:  # one-hot: an all-zero row is unknown
                y = np.where(y.max(-1) > 0, y.argmax(-1), -1)
            yield x.numpy(), y

    def predict(x):
        out = np.asarray(model.predict_on_batch(x))
        if threshold is not None:
            return (out[..., 0] >= threshold).astype(np.int64)
        return out

    cm = evaluate(predict, batches(), c, worst=0)["cm"]
    report = scores(cm, class_names)
    report["confusion_matrix"] = cm.tolist()
    report.update(extra or {})
    write_text_atomic(path, json.dumps(report, indent=2), "metrics")
    return report


def save_predictions(model, ds, val_idx, size, path, n: int = 4, threshold=None) -> None:
    """The tutorial's picture: a few validation images, their truth and the model's prediction."""
    import numpy as np
    import tensorflow as tf

    from kseg.data.pipeline import decode_image
    from kseg.viz import save_prediction_grid

    idx = list(val_idx[:n])
    if not idx:
        return
    images, truths = [], []
    for i in idx:
        img = tf.image.resize(tf.cast(decode_image(ds.image_paths[i]), tf.float32), size).numpy()
        lab = tf.image.resize(ds.labels[i][..., None], size, method="nearest").numpy()[..., 0]
        images.append(img)
        truths.append(lab)
    out = model.predict(np.stack(images), verbose=0)
    preds = (out[..., 0] >= threshold).astype(np.int64) if threshold is not None else np.argmax(out, -1)
    colors = getattr(ds, "colors", None)  # a folder dataset's palette file, if it had one
    if colors is None:
        colors = "binary" if threshold is not None else ds.mask
    save_prediction_grid(path, images, truths, preds, ds.class_names, colors)


RUN_OUTPUTS = ("best.keras", "history.csv", "curves.png", "predictions.png", "metrics.json", "saved_model",
               RUN_FILE, ".backup")


def clear_finished_run(out: Path, overwrite: bool = False) -> None:
    """Refuse to train over a finished run in ``out`` unless ``overwrite``; with it, remove the run's outputs.

    A run is finished when its ``run.json`` says so, or (a run folder of an older kseg) when it holds
    ``best.keras`` and ``metrics.json`` and no resume state. An interrupted run (a ``.backup`` folder) is not
    finished: the same command resumes it, and ``overwrite`` starts it over."""
    info = None
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((out / RUN_FILE).read_text())
    finished = (bool(info.get("finished")) if isinstance(info, dict)
                else (out / "best.keras").exists() and (out / "metrics.json").exists()
                and not (out / ".backup").exists())
    present = [n for n in RUN_OUTPUTS if (out / n).exists()]
    if finished and not overwrite:
        shown = ", ".join(n + ("/" if (out / n).is_dir() else "") for n in present if n != ".backup")
        raise KsegError(f"{out}: holds a finished run ({shown}); pass --overwrite to train over it "
                        f"(its outputs are removed first), or choose another --out")
    if overwrite and present:
        for n in present:
            target = out / n
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        print(f"kseg: --overwrite: removed {'the finished' if finished else 'the interrupted'} run's outputs "
              f"in {out} ({', '.join(present)})", flush=True)


def _names(paths, n: int = 3) -> str:
    names = [Path(p).name for p in paths]
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


RESUME_STATE = "state.json"


def read_resume_state(backup: Path, config: dict) -> dict | None:
    """The resume state in ``backup`` (None if there is none); errors name the file.

    The state is ``state.json`` (``epoch``: epochs finished, ``weights``: the
    file holding the model's and the optimizer's variables after them, and the
    run's ``config``). It is written last and atomically, so it always points
    at a complete weights file.
    """
    meta = backup / RESUME_STATE
    if not meta.exists():
        if backup.exists():
            print(f"kseg: warning: {backup}: no {RESUME_STATE} in it (an interrupted run of another kseg "
                  f"version?); starting over", file=sys.stderr)
            shutil.rmtree(backup, ignore_errors=True)
        return None
    try:
        state = json.loads(meta.read_text())
        epoch, weights, saved = int(state["epoch"]), str(state["weights"]), dict(state["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KsegError(f"{meta}: unreadable resume state ({type(err).__name__}: {err}); "
                        f"delete {backup} to start the run over") from None
    diff = [f"{k} {saved.get(k)!r}, not {v!r}" for k, v in config.items() if saved.get(k) != v]
    if diff:
        raise KsegError(f"{backup.parent}: holds an interrupted run with other options ({'; '.join(diff)}): "
                        f"run with those options to resume it, or pick another --out, or delete {backup}")
    if epoch < 0 or "/" in weights or not (backup / weights).is_file():
        raise KsegError(f"{meta}: resume state names a missing weights file {weights!r}; "
                        f"delete {backup} to start the run over")
    return {"epoch": epoch, "weights": weights, "config": saved}


def restore_resume_state(model, backup: Path, state: dict, lr: float) -> int:
    """Load the model's and the optimizer's variables from the resume state; return the epoch to start at."""
    path = backup / state["weights"]
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except Exception as err:  # h5py and keras raise many types for a damaged or foreign file
        raise KsegError(f"{path}: cannot resume from it ({type(err).__name__}: {err}); "
                        f"delete {backup} to start the run over") from None
    try:
        model.optimizer.learning_rate.assign(lr)  # this run's --lr, not the interrupted one's
    except (AttributeError, TypeError, ValueError):
        pass
    return state["epoch"]


class RunRecorder:
    """After each epoch: ``history.csv`` (rewritten atomically), then ``best.keras`` if the
    monitored value improved (saved atomically, never for a non-finite loss); after each
    batch: stop the run when the loss is NaN or infinite. ``ema``: a ``keras.callbacks.SwapEMAWeights``
    of the same fit; ``best.keras`` is then saved with the averaged weights (those it validated).
    ``thaw``: the encoder layers ``--freeze-epochs`` unfreezes later; a ``best.keras`` saved while they are
    still frozen is saved thawed (as :func:`thawed` with ``keep_bn_frozen``), so that loading it builds the
    optimizer the run built (over the whole model) and its state loads, and the model fine-tunes as a whole."""

    def __new__(cls, csv_path, rows, best_path, monitor, best=None, best_epoch=None, last_good_epoch=None,
                ema=None, thaw=(), keep_bn_frozen=False):
        import keras

        from kseg.optimizers import averaged_weights

        class _Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.rows = list(rows)
                self.best = best
                self.best_epoch = best_epoch
                self.last_good_epoch = last_good_epoch
                self.nan_at = None
                self._epoch = 0

            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)) and self.nan_at is None:
                    self.nan_at = (self._epoch, batch)
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                logs = {k: float(v) for k, v in (logs or {}).items()}
                self.rows.append({"epoch": epoch, **logs})
                self._write_history()
                finite = all(math.isfinite(v) for k, v in logs.items() if k.endswith("loss"))
                if not finite or self.nan_at is not None:
                    return
                self.last_good_epoch = epoch
                if monitor not in logs:
                    raise KsegError(f"bad --monitor {monitor!r}: choose one of {', '.join(sorted(logs))}")
                current = logs[monitor]
                better = (self.best is None or (current < self.best if _mode(monitor) == "min"
                                                else current > self.best))
                if math.isfinite(current) and better:
                    with (averaged_weights(ema), thawed(thaw, keep_bn_frozen),
                          atomic_path(best_path, "checkpoint") as tmp):
                        self.model.save(tmp)
                    self.best, self.best_epoch = current, epoch

            def _write_history(self):
                keys = ["epoch"] + sorted({k for r in self.rows for k in r if k != "epoch"})
                with atomic_path(csv_path, "history") as tmp:
                    with open(tmp, "w", newline="") as f:
                        w = csv.DictWriter(f, keys, restval="", extrasaction="ignore")
                        w.writeheader()
                        w.writerows(self.rows)

        return _Recorder()


class ResumeState:
    """After each epoch with a finite loss: the model's and the optimizer's variables into
    ``backup/epoch-N.weights.h5``, then ``backup/state.json`` pointing at it (both atomic)."""

    def __new__(cls, backup, config, recorder):
        import keras

        class _State(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if recorder.nan_at is not None or recorder.last_good_epoch != epoch:
                    return  # never resume from a NaN model: the last good state stays
                try:
                    backup.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise KsegError(f"{backup}: cannot create the resume folder ({err.strerror})") from None
                name = f"epoch-{epoch + 1}.weights.h5"
                with atomic_path(backup / name, "resume state") as tmp:
                    self.model.save_weights(tmp)
                write_text_atomic(backup / RESUME_STATE, json.dumps({"epoch": epoch + 1, "weights": name,
                                                                      "config": config}), "resume state")
                for old in backup.glob("epoch-*.weights.h5"):
                    if old.name != name:
                        old.unlink(missing_ok=True)

        return _State()


class CurvesCallback:
    """Redraw the learning curves from the CSV log after every epoch."""

    def __new__(cls, csv_path, png_path):
        import keras

        from kseg.viz import plot_history

        class _Curves(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                try:
                    plot_history(csv_path, png_path)
                except (OSError, ValueError) as err:
                    print(f"kseg: warning: {png_path}: cannot draw curves ({err})", file=sys.stderr)

        return _Curves()


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
