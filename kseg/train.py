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

This module is the command: its options (:func:`parser`) make a
:class:`kseg.training.TrainConfig`, and :func:`kseg.training.fit` trains;
a program can do the same, ``kseg.training.fit(TrainConfig(epochs=5, ...))``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from kseg.commandline import command_parser
from kseg.errors import KsegError, cli_entry  # noqa: F401  (KsegError: callers catch it by this name)
from kseg.precision import PRECISIONS
from kseg.training.config import (  # noqa: F401
    DATA_FORMATS,
    FOLDS,
    JIT_COMPILE,
    MULTISCALE,
    OPTIMIZERS,
    OUTPUT_STRIDES,
    SCHEDULES,
    TrainConfig,
    parse_classes,
    parse_ignore_index,
    run_options,
)

DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def parser(argv=None) -> argparse.ArgumentParser:
    """The command line's parser; with ``--recipe NAME`` in ``argv`` the recipe's options are its defaults."""
    from kseg import recipes

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=None)
    known, _ = pre.parse_known_args(argv)
    p = command_parser("kseg.train", __doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=DEFAULTS["recipe"], choices=sorted(recipes.RECIPES),
                   help="a named preset of the options below (see kseg.recipes); options given here win")
    _data_options(p)
    _model_options(p)
    _training_options(p)
    _output_options(p)
    if known.recipe is not None:
        p.set_defaults(**recipes.get(known.recipe))
    return p


def _data_options(p: argparse.ArgumentParser) -> None:
    """The data: iccv09 or a folder of images and masks, and the output folder's finished run."""
    p.add_argument("--mask", default=DEFAULTS["mask"], help="regions (8 classes) or surfaces (3 classes)")
    p.add_argument("--data", default=DEFAULTS["data"],
                   help="iccv09Data folder or iccv09Data.tar.gz (default: find or download); "
                        "with --data-format folder: a folder holding images/ and masks/")
    p.add_argument("--data-format", choices=DATA_FORMATS, default=DEFAULTS["data_format"],
                   help="folder: your own images/ + masks/ (see kseg.data.folder; palette.json or classes.txt "
                        "in the folder name the classes)")
    p.add_argument("--classes", default=DEFAULTS["classes"], metavar="NAMES",
                   help="folder data: class names, comma-separated (id 0 first) or a text file with one a line; "
                        "default: palette.json, classes.txt, or what the masks hold")
    p.add_argument("--palette", default=DEFAULTS["palette"], metavar="FILE",
                   help="folder data: a palette file (JSON or text) naming each class and its colour, needed "
                        "for RGB colour masks whose colours are not to be taken as found")
    p.add_argument("--ignore-index", default=DEFAULTS["ignore_index"], metavar="ID",
                   help="folder data: the mask value that marks unknown pixels, or 'none'")
    p.add_argument("--binary", action=argparse.BooleanOptionalAction, default=DEFAULTS["binary"],
                   help="folder data: train foreground against background (one sigmoid output); default: "
                        "detected from masks that hold two values, such as 0/255 or 0/1")
    p.add_argument("--threshold", type=float, default=DEFAULTS["threshold"],
                   help="binary models: the foreground probability from which a pixel is foreground")
    p.add_argument("--overwrite", action="store_true",
                   help="train over a finished run in --out (its outputs are removed first); without it, "
                        "a finished run is never overwritten")

def _model_options(p: argparse.ArgumentParser) -> None:
    """The model and its encoder."""
    p.add_argument("--arch", "--model", dest="model", default=DEFAULTS["model"], metavar="ARCH",
                   help="the architecture (see kseg.models.list_models()); --model is its older name (in the other "
                        "commands --model is a trained model's file); maskrcnn and panoptic_fpn train on COCO "
                        "instance data instead ('kseg train --arch maskrcnn --help')")
    p.add_argument("--backbone", default=DEFAULTS["backbone"],
                   help="encoder (see kseg.models.list_backbones()); default: the architecture's own (resnet34; "
                        "segnet vgg16, segformer mit_b0, hrnet hrnet_w18_small_v2)")
    p.add_argument("--encoder-weights", default=DEFAULTS["encoder_weights"],
                   help="none, imagenet, a weights file, or (segformer) a SegFormer preset such as "
                        "segformer-b0-ade20k whose encoder starts training")
    p.add_argument("--encoder-freeze", action="store_true", help="do not train the encoder")
    p.add_argument("--freeze-epochs", type=int, default=DEFAULTS["freeze_epochs"],
                   help="train with the encoder frozen (BatchNorm in inference mode) for this many epochs, "
                        "then unfreeze it")
    p.add_argument("--freeze-encoder-bn", action="store_true",
                   help="keep the encoder's BatchNorm layers in inference mode (ImageNet statistics, scale and "
                        "offset fixed) while the rest of the encoder trains: DeepLab's fine_tune_batch_norm=False, "
                        "advised for small batches (< 12) on a pretrained encoder")
    p.add_argument("--encoder-lr-mult", type=float, default=DEFAULTS["encoder_lr_mult"], metavar="M",
                   help="the encoder's learning rate (and weight decay) as a fraction of --lr, e.g. 0.1 to "
                        "fine-tune a pretrained encoder more gently than the new decoder (PyTorch parameter "
                        "groups, mmseg's lr_mult); 1 = one rate for all")
    p.add_argument("--bn-momentum", type=float, default=DEFAULTS["bn_momentum"],
                   help="momentum of every BatchNorm's moving statistics (Keras builds 0.99, keras.applications "
                        "MobileNetV2 0.999; 0.9 = PyTorch's 0.1 adapts within tens of steps, so short runs "
                        "validate well); default: as built")
    p.add_argument("--multiscale", choices=MULTISCALE, default=DEFAULTS["multiscale"],
                   help="train the model at several input scales with a learned attention that merges them "
                        "(kseg.models.multiscale): hierarchical (Tao et al. 2020; any scales at inference) or "
                        "attention (Chen et al. 2016; the trained scales only); default: one scale")
    p.add_argument("--train-scales", default=DEFAULTS["train_scales"], metavar="SCALES",
                   help="with --multiscale: the input scales trained, multiples of --size (rounded to multiples "
                        "of 32); default 0.5,1")

def _training_options(p: argparse.ArgumentParser) -> None:
    """The loss, the optimizer and its schedule, the split, sampling and augmentation."""
    p.add_argument("--loss", default=DEFAULTS["loss"], help="ce, dice, focal, or a sum like dice+focal")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="passes over the training images")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images per training step")
    p.add_argument("--size", default=DEFAULTS["size"], help="H or HxW, multiples of 32")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="(peak) learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS["optimizer"],
                   help="adam, adamw (decoupled weight decay) or sgd (momentum 0.9)")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"],
                   help="weight decay for adamw and sgd")
    p.add_argument("--schedule", choices=SCHEDULES, default=DEFAULTS["schedule"],
                   help="learning-rate schedule over the whole run (see kseg.schedules)")
    p.add_argument("--warmup", type=float, default=DEFAULTS["warmup"], help="epochs of linear learning-rate warm-up")
    p.add_argument("--ema", type=float, default=DEFAULTS["ema"], metavar="MOMENTUM",
                   help="keep an exponential moving average of the trained weights (Polyak averaging, "
                        "Keras's use_ema) with this momentum per step, e.g. 0.99; validation, best.keras, "
                        "the final evaluation and the export use the averaged weights")
    p.add_argument("--class-weights", default=DEFAULTS["class_weights"],
                   help="none, balanced (n/(C*n_c)), median (median frequency balancing), sqrt "
                        "(1/sqrt(frequency)), or one number per class, e.g. 1,1,2; counted on the training images")
    p.add_argument("--repeat-threshold", type=float, default=DEFAULTS["repeat_threshold"], metavar="T",
                   help="repeat-factor sampling for rare classes (LVIS, detectron2's REPEAT_THRESHOLD): an image "
                        "is drawn max(1, sqrt(T/f)) times as often, f = the fraction of training images holding "
                        "its rarest class; epochs keep their length; 0 = off")
    p.add_argument("--val-split", type=float, default=DEFAULTS["val_split"],
                   help="the fraction of images held out for validation (a seeded random split)")
    p.add_argument("--fold", type=int, default=DEFAULTS["fold"], choices=FOLDS, metavar="K",
                   help="iccv09 only: validate on fold K (0-4) of kseg's fixed 5-fold split (572/143), "
                        "instead of --val-split")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed of the split, the shuffling, the augmentation and the initial weights")
    p.add_argument("--augment", default=DEFAULTS["augment"],
                   help="none, flip, scale (x0.5-2 and crop), color, strong (= scale,flip,color), or several "
                        "joined by commas")
    p.add_argument("--sparse", action="store_true", help="sparse targets (255 = ignored) instead of one-hot")
    p.add_argument("--monitor", default=DEFAULTS["monitor"], help="quantity that picks best.keras (e.g. val_miou)")
    p.add_argument("--early-stop", type=int, default=DEFAULTS["early_stop"], metavar="N",
                   help="stop when --monitor has not improved for N epochs (best.keras is the best epoch's); "
                        "a resumed run counts from where it resumes")
    p.add_argument("--tensorboard", default=DEFAULTS["tensorboard"], metavar="DIR",
                   help="also log losses and metrics for TensorBoard into DIR (tensorboard --logdir DIR)")

def _output_options(p: argparse.ArgumentParser) -> None:
    """The final evaluation, the outputs, and how the run runs."""
    p.add_argument("--eval-scales", default=DEFAULTS["eval_scales"],
                   help="also score best.keras at each image's native resolution with these test-time "
                        "scales, e.g. 0.75,1,1.25 (metrics.json 'native')")
    p.add_argument("--eval-flip", action="store_true", help="add flipped copies to that native evaluation")
    p.add_argument("--eval-output-stride", type=int, default=DEFAULTS["eval_output_stride"], choices=OUTPUT_STRIDES,
                   metavar="N",
                   help="run that native evaluation at output stride N (DeepLabV3+ trained at 16: 8 gives "
                        "denser features for more compute)")
    p.add_argument("--limit", type=int, default=DEFAULTS["limit"], help="use only the first N images (quick tries)")
    p.add_argument("--out", default=DEFAULTS["out"], help="output folder (default runs/<mask>-<model>-<backbone>)")
    p.add_argument("--jit-compile", choices=JIT_COMPILE, default=DEFAULTS["jit_compile"], help="XLA compilation")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS["precision"],
                   help="mixed_bfloat16: compute in bfloat16 with float32 weights, about 1.3x faster training on "
                        "CPUs with bfloat16 instructions (avx512_bf16 or AMX) and recent GPUs, several times "
                        "slower on others; evaluation and the export run in float32 either way")
    p.add_argument("--strategy", default=DEFAULTS["strategy"],
                   help="tf.distribute strategy: auto, none, mirrored (this machine's GPUs), multiworker "
                        "(machines named in TF_CONFIG) or tpu; auto is multiworker with a TF_CONFIG cluster, "
                        "else mirrored with more than one GPU, else none; --batch-size is the global batch")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--no-tflite", action="store_true", help="export the SavedModel without saved_model/model.tflite")
    p.add_argument("--cache-dir", default=DEFAULTS["cache_dir"], help="where parsed labels are cached")
    p.add_argument("--verbose", type=int, default=DEFAULTS["verbose"],
                   help="Keras verbosity (default: progress bar on a tty)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def parse_config(argv=None) -> TrainConfig:
    """The :class:`TrainConfig` of a command line (checked and resolved)."""
    return TrainConfig.from_args(parser(argv).parse_args(argv))


def parse_args(argv=None) -> argparse.Namespace:
    """The command line as an ``argparse.Namespace``, checked and resolved as :class:`TrainConfig` does."""
    return validate(parser(argv).parse_args(argv))


def validate(args: argparse.Namespace) -> argparse.Namespace:
    """Check the options in ``args`` (:class:`KsegError` naming the first bad one) and resolve them in place
    (``size`` to (H, W), ``eval_scales`` to floats, ``ignore_index`` to an id or None, the default ``out``)."""
    vars(args).update(vars(TrainConfig.from_args(args)))
    return args


def run(args) -> dict:
    """Train as ``args`` (an ``argparse.Namespace`` of :func:`parse_args`, or a :class:`TrainConfig`) say; return
    the validation metrics of the best model (see :func:`kseg.training.fit`)."""
    from kseg.training import fit

    return fit(args if isinstance(args, TrainConfig) else TrainConfig.from_args(args))


# what this module offered before the library moved to kseg.training: {name: (module, name there)}
_MOVED = {
    "Unfreeze": ("callbacks", "Unfreeze"), "SparseAdapter": ("callbacks", "SparseAdapter"),
    "RunRecorder": ("callbacks", "RunRecorder"), "ResumeState": ("callbacks", "ResumeState"),
    "CurvesCallback": ("callbacks", "CurvesCallback"),
    "thaw_encoder": ("model", "thaw_encoder"), "thawed": ("model", "thawed"),
    "make_optimizer": ("model", "make_optimizer"), "encoder_lr_multipliers": ("model", "encoder_lr_multipliers"),
    "set_bn_momentum": ("model", "set_bn_momentum"), "class_weights": ("model", "class_weights"),
    "repeat_summary": ("data", "repeat_summary"),
    "evaluate_to_json": ("report", "evaluate_to_json"), "save_predictions": ("report", "save_predictions"),
    "_names": ("report", "names"),
    "RUN_OUTPUTS": ("resume", "RUN_OUTPUTS"), "RESUME_STATE": ("resume", "RESUME_STATE"),
    "clear_finished_run": ("resume", "clear_finished_run"), "read_resume_state": ("resume", "read_resume_state"),
    "restore_resume_state": ("resume", "restore_resume_state"), "_read_history": ("resume", "read_history"),
    "_best_so_far": ("resume", "best_so_far"), "_mode": ("resume", "monitor_mode"),
}


def __getattr__(name):
    """The names listed in ``_MOVED``, imported from :mod:`kseg.training` when first asked for (so that the
    command's errors about its options come before TensorFlow loads)."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _MOVED[name]
    value = getattr(importlib.import_module(f"kseg.training.{module}"), attr)
    globals()[name] = value
    return value


@cli_entry
def main(argv=None):
    from kseg.detection.train_command import wants_instances

    argv = sys.argv[1:] if argv is None else argv
    if wants_instances(argv):  # --arch maskrcnn | panoptic_fpn: kseg.detection.fit
        from kseg.detection.train_command import main as instance_main

        return instance_main(argv)
    from kseg.training import fit

    fit(parse_config(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
