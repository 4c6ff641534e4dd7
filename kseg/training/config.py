"""TrainConfig: every option of a training run, its default, and the checks that run before any work.

``python -m kseg.train`` parses its command line into a :class:`TrainConfig` (:meth:`TrainConfig.from_args`);
a program builds one directly, ``TrainConfig(data="my_data", data_format="folder", epochs=5)``, or from a recipe,
``TrainConfig.from_recipe("regions-mobilenetv2", epochs=2)``. Either way :meth:`TrainConfig.__post_init__`
checks the options (a bad one raises :class:`kseg.errors.KsegError` naming its ``--option``) and resolves
them: ``size`` becomes ``(H, W)``, ``eval_scales`` (and ``train_scales``) a tuple of floats, ``ignore_index`` an id or None,
``encoder_weights`` "none" None, and ``out`` defaults to ``runs/<mask or folder>-<model>-<backbone>``.
Resolving is idempotent: a resolved config resolves to itself.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from kseg.errors import KsegError
from kseg.precision import PRECISIONS

DATA_FORMATS = ("iccv09", "folder")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "poly")
JIT_COMPILE = ("auto", "on", "off")
FOLDS = tuple(range(5))
OUTPUT_STRIDES = (8, 16, 32)
MULTISCALE = ("attention", "hierarchical")  # kseg.models.multiscale's modes


# each architecture's backbone when --backbone is not given (kseg.models.default_backbone, kept here so that
# parsing options does not import TensorFlow; tests/training/test_training.py checks the two agree)
DEFAULT_BACKBONES = {"segnet": "vgg16", "segformer": "mit_b0", "hrnet": "hrnet_w18_small_v2"}


@dataclasses.dataclass
class TrainConfig:
    """The options of one training run (``python -m kseg.train --help`` describes each; ``--batch-size`` is
    ``batch_size`` here)."""

    recipe: str | None = None
    mask: str = "surfaces"
    data: str | None = None
    data_format: str = "iccv09"
    classes: str | None = None
    palette: str | None = None
    ignore_index: int | str | None = "255"
    binary: bool | None = None
    threshold: float = 0.5
    overwrite: bool = False
    model: str = "unet"
    backbone: str | None = None  # None: the architecture's own default (DEFAULT_BACKBONES)
    encoder_weights: str | None = None
    encoder_freeze: bool = False
    freeze_epochs: int = 0
    freeze_encoder_bn: bool = False
    encoder_lr_mult: float = 1.0
    bn_momentum: float | None = None
    multiscale: str | None = None
    train_scales: str | tuple | None = None  # None: (0.5, 1.0) with --multiscale
    loss: str = "ce"
    epochs: int = 20
    batch_size: int = 16
    size: str | tuple = "224"
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.0
    ema: float | None = None
    class_weights: str = "none"
    repeat_threshold: float = 0.0
    val_split: float = 0.2
    fold: int | None = None
    seed: int = 42
    augment: str = "none"
    sparse: bool = False
    monitor: str = "val_loss"
    eval_scales: str | tuple | None = None
    eval_flip: bool = False
    eval_output_stride: int | None = None
    limit: int | None = None
    out: str | None = None
    jit_compile: str = "off"
    precision: str = "float32"
    strategy: str = "auto"
    no_export: bool = False
    no_tflite: bool = False
    cache_dir: str | None = None
    verbose: int | None = None
    debug: bool = False
    early_stop: int | None = None
    tensorboard: str | None = None

    def __post_init__(self):
        for step in (_check_choices, _check_run, _check_training, _resolve, _resolve_data):
            step(self)  # in this order: with several bad options, the first of them is the one reported

    @classmethod
    def from_args(cls, args) -> TrainConfig:
        """The config of a parsed command line (an ``argparse.Namespace`` with an attribute per option; options
        it lacks keep their defaults). An attribute that is no option is a ``TypeError``."""
        values = dict(vars(args))
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"not options of kseg.train: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_recipe(cls, name: str, **options) -> TrainConfig:
        """Recipe ``name``'s options (see :mod:`kseg.recipes`) with ``options`` over them, as the command
        line's ``--recipe NAME --option ...``."""
        from kseg import recipes

        return cls(**{**recipes.get(name), **options, "recipe": name})

    def as_dict(self) -> dict:
        """Every option as resolved, sorted by name and JSON-ready (tuples as lists): what metrics.json
        records as ``options``, so that a score says how it was trained."""
        return run_options(vars(self))

    def warnings(self) -> list[str]:
        """The ``kseg: warning: ...`` lines this combination of options deserves (the run prints them)."""
        if self.freeze_encoder_bn and str(self.encoder_weights).lower() in ("none", ""):
            return ["kseg: warning: --freeze-encoder-bn without pretrained encoder weights keeps the encoder's "
                    "BatchNorm layers at their initial statistics (no normalisation)"]
        return []


def run_options(values) -> dict:
    """``values`` (a dict of option: value, or an object whose attributes they are: a :class:`TrainConfig`, a
    parsed command line) sorted by name and JSON-ready: plain values as they are, lists and tuples of them as
    lists, anything else as its ``str``."""
    values = values if isinstance(values, dict) else vars(values)
    plain = (str, int, float, bool, type(None))
    return {k: (v if isinstance(v, plain) else list(v) if isinstance(v, (list, tuple))
                and all(isinstance(x, plain) for x in v) else str(v)) for k, v in sorted(values.items())}


def _choose(option: str, value, choices) -> None:
    if value not in choices:
        raise KsegError(f"unknown --{option} {value!r}: choose one of {', '.join(map(str, choices))}")


def _check_choices(c: TrainConfig) -> None:
    """What the command line's ``choices`` check, for a config built in a program."""
    for option, value, choices in (("data-format", c.data_format, DATA_FORMATS),
                                   ("optimizer", c.optimizer, OPTIMIZERS), ("schedule", c.schedule, SCHEDULES),
                                   ("jit-compile", c.jit_compile, JIT_COMPILE), ("precision", c.precision, PRECISIONS)):
        _choose(option, value, choices)
    if c.fold is not None:
        _choose("fold", c.fold, FOLDS)
    if c.eval_output_stride is not None:
        _choose("eval-output-stride", c.eval_output_stride, OUTPUT_STRIDES)
    if c.multiscale is not None and str(c.multiscale).lower() in ("none", ""):
        c.multiscale = None
    if c.multiscale is not None:
        _choose("multiscale", c.multiscale, MULTISCALE)


def _finite(v) -> bool:
    return v >= 0 and math.isfinite(v)


def _check_run(c: TrainConfig) -> None:
    from kseg.data import MASKS
    from kseg.distribute import STRATEGIES

    _choose("mask", c.mask, MASKS)
    if c.epochs < 1:
        raise KsegError(f"bad --epochs {c.epochs}: give a positive integer")
    if c.batch_size < 1:
        raise KsegError(f"bad --batch-size {c.batch_size}: give a positive integer")
    if not 0.0 < c.val_split < 1.0:
        raise KsegError(f"bad --val-split {c.val_split}: give a fraction between 0 and 1, e.g. 0.2")
    _choose("strategy", c.strategy, STRATEGIES)
    if not (c.lr > 0 and math.isfinite(c.lr)):
        raise KsegError(f"bad --lr {c.lr}: give a positive number")


def _check_training(c: TrainConfig) -> None:
    if c.bn_momentum is not None and not 0.0 <= c.bn_momentum < 1.0:
        raise KsegError(f"bad --bn-momentum {c.bn_momentum}: give a number in [0, 1), e.g. 0.9")
    if c.freeze_epochs < 0:
        raise KsegError(f"bad --freeze-epochs {c.freeze_epochs}: give 0 or a positive integer")
    if not (c.encoder_lr_mult > 0 and math.isfinite(c.encoder_lr_mult)):
        raise KsegError(f"bad --encoder-lr-mult {c.encoder_lr_mult}: give a positive number, e.g. 0.1")
    if c.encoder_lr_mult != 1.0 and c.encoder_freeze:
        raise KsegError("--encoder-lr-mult scales the encoder's learning rate, but --encoder-freeze does not train "
                        "it: drop one of the two")
    if c.ema is not None and not 0.0 < c.ema < 1.0:
        raise KsegError(f"bad --ema {c.ema}: give a momentum between 0 and 1, e.g. 0.99")
    if c.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise KsegError("--tensorboard needs the tensorboard package: pip install tensorboard "
                            "(or pip install 'kseg[tensorboard]')")
    if c.early_stop is not None and c.early_stop < 1:
        raise KsegError(f"bad --early-stop {c.early_stop}: give a number of epochs without improvement, e.g. 10")
    if not _finite(c.repeat_threshold):
        raise KsegError(f"bad --repeat-threshold {c.repeat_threshold}: give 0 (off) or a fraction of images, "
                        "e.g. 0.5")
    if not _finite(c.warmup):
        raise KsegError(f"bad --warmup {c.warmup}: give 0 or a positive number of epochs")
    if not _finite(c.weight_decay):
        raise KsegError(f"bad --weight-decay {c.weight_decay}: give 0 or a positive number")
    if c.weight_decay and c.optimizer == "adam":
        raise KsegError("--weight-decay needs --optimizer adamw or sgd")
    if c.fold is not None and c.data_format != "iccv09":
        raise KsegError("--fold picks kseg's iccv09 5-fold split: use --val-split with --data-format folder")


def _resolve(c: TrainConfig) -> None:
    from kseg.data import check_size
    from kseg.data.augment import get as get_augment

    get_augment(c.augment)  # a bad name fails before any loading
    if c.eval_scales is not None:
        from kseg.inference import parse_scales

        c.eval_scales = parse_scales(c.eval_scales)
    c.size = check_size(c.size)
    if c.multiscale is not None and c.eval_output_stride:
        raise KsegError("--eval-output-stride: a multi-scale model (--multiscale) runs at its trained stride; "
                        "drop one of the two")
    if c.train_scales is not None and c.multiscale is None:
        raise KsegError("--train-scales is for a multi-scale model: add --multiscale hierarchical or attention")
    if c.multiscale is not None:
        c.train_scales = parse_train_scales("0.5,1" if c.train_scales is None else c.train_scales)
    if c.multiscale == "attention" and c.eval_scales is not None and tuple(sorted(c.eval_scales)) != c.train_scales:
        raise KsegError(f"--eval-scales {','.join(f'{v:g}' for v in c.eval_scales)}: explicit attention "
                        f"(--multiscale attention) runs at its --train-scales only: drop --eval-scales")
    if c.encoder_weights in ("none", "None", ""):
        c.encoder_weights = None
    if c.backbone is None:
        c.backbone = DEFAULT_BACKBONES.get(c.model, "resnet34")
    if c.out is None:
        c.out = os.path.join("runs", f"{c.mask if c.data_format == 'iccv09' else 'folder'}-{c.model}-{c.backbone}")


def _resolve_data(c: TrainConfig) -> None:
    if c.data_format == "folder" and not c.data:
        raise KsegError("--data-format folder needs --data: a folder holding images/ and masks/")
    folder_only = [f"--{k.replace('_', '-')}" for k in ("classes", "palette", "binary") if getattr(c, k) is not None]
    if c.ignore_index not in ("255", 255):
        folder_only.append("--ignore-index")
    if folder_only and c.data_format != "folder":
        raise KsegError(f"{', '.join(folder_only)}: for your own data (--data-format folder); iccv09's classes "
                        f"are fixed by --mask")
    c.ignore_index = parse_ignore_index(c.ignore_index)
    if not 0.0 < c.threshold < 1.0:
        raise KsegError(f"bad --threshold {c.threshold}: give a probability between 0 and 1, e.g. 0.5")


def parse_train_scales(text) -> tuple[float, ...]:
    """``--train-scales``: two or more different positive scales, sorted (``"1,0.5"`` -> (0.5, 1.0))."""
    from kseg.inference import parse_scales

    try:
        vals = sorted(parse_scales(text))
    except KsegError:
        vals = []
    if len(vals) < 2 or len(set(vals)) != len(vals):
        shown = text if isinstance(text, str) else ",".join(f"{v:g}" for v in text)
        raise KsegError(f"bad --train-scales {shown!r}: give two or more different positive scales separated by "
                        f"commas, e.g. 0.5,1")
    return tuple(vals)


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
