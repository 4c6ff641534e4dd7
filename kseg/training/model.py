"""The model of a training run: built, its encoder found, compiled with loss, metrics and optimizer.

The encoder's layers are :func:`kseg.models.encoder_layers` of the built model; a run that treats the encoder
apart (frozen, frozen for some epochs, its BatchNorm kept, its own learning rate) freezes them, and thaws
those it trains from the start.
"""

from __future__ import annotations

import contextlib
import math

from kseg.errors import KsegError


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


def separate_encoder(config) -> bool:
    """Whether the run treats the encoder apart from the decoder (frozen, frozen for a while, its BatchNorm
    kept, or its own learning rate)."""
    return bool(config.encoder_freeze or config.freeze_epochs > 0 or config.freeze_encoder_bn
                or config.encoder_lr_mult != 1.0)


def build_model(config, num_classes: int, binary: bool):
    """``(model, thaw, lr_multipliers)``: the model ``config`` asks for with ``num_classes`` outputs (one
    sigmoid output for ``binary``); the encoder layers ``--freeze-epochs`` thaws later (``[]`` if none); and
    the encoder's ``{variable path: learning-rate factor}`` (see :func:`encoder_lr_multipliers`)."""
    from kseg import models
    from kseg.models.layers import freeze

    shape = (None, None, 3) if config.multiscale else (*config.size, 3)  # a multi-scale trunk runs at any size
    model = models.build(config.model, backbone=config.backbone, num_classes=1 if binary else num_classes,
                         activation="sigmoid" if binary else "softmax", input_shape=shape,
                         encoder_weights=config.encoder_weights)
    if config.eval_output_stride:  # a model that cannot run at that stride fails now, not after training
        models.with_output_stride(model, config.eval_output_stride)
    encoder = models.encoder_layers(model) if separate_encoder(config) else []
    freeze(encoder)  # as build(encoder_freeze=True) would
    lr_multipliers = encoder_lr_multipliers(encoder, config.encoder_lr_mult, config.freeze_encoder_bn)
    thaw = [] if config.encoder_freeze else encoder  # what --freeze-epochs thaws later
    if thaw and config.freeze_epochs == 0:  # the encoder trains from the start
        thaw_encoder(thaw, keep_bn_frozen=config.freeze_encoder_bn)
        thaw = []
    if lr_multipliers:
        print(f"kseg: encoder learning rate x{config.encoder_lr_mult:g} ({len(lr_multipliers)} variables)",
              flush=True)
    if config.multiscale:
        model = multiscale_model(model, config)
    if config.bn_momentum is not None:
        set_bn_momentum(model, config.bn_momentum)
    return model, thaw, lr_multipliers


def multiscale_model(model, config):
    """``model`` (built at any input size) in learned multi-scale attention (``--multiscale``, ``--train-scales``),
    taking ``--size`` inputs; its layers, and so the encoder's frozen flags and learning-rate factors, are
    shared."""
    from kseg import models

    ms = models.multiscale(model, mode=config.multiscale, train_scales=config.train_scales,
                           input_shape=(*config.size, 3))
    print(f"kseg: multi-scale {config.multiscale} attention over scales "
          f"{','.join(f'{s:g}' for s in config.train_scales)} of {config.size[0]}x{config.size[1]}", flush=True)
    return ms


def compile_model(model, config, data, thaw=(), lr_multipliers=None, strategy=None):
    """Compile ``model`` for ``data`` (a :class:`kseg.training.data.TrainingData`) as ``config`` says; return
    ``(loss, metrics)`` (unwrapped, for validation outside ``fit``). With ``thaw`` (layers frozen now and
    thawed later) the optimizer is built over them too, so that it holds their state from the start."""
    from kseg import distribute

    weights = class_weights(config.class_weights, [data.ds.labels[i] for i in data.train_idx], data.ds.num_classes)
    if weights is not None:
        print("kseg: class weights " + ", ".join(f"{n} {w:.2f}" for n, w in zip(data.ds.class_names, weights)),
              flush=True)
    loss = make_loss(config, data.ds.num_classes, weights)
    metrics = make_metrics(config, data.ds.num_classes, data.binary)
    steps = data.steps_per_epoch
    optimizer = make_optimizer(config, total_steps=config.epochs * steps, warmup_steps=round(config.warmup * steps),
                               late_variables=bool(thaw), lr_multipliers=lr_multipliers)
    jit = {"auto": "auto", "on": True, "off": False}[config.jit_compile]
    model.compile(optimizer=optimizer, loss=distribute.replica_loss(loss, strategy), metrics=metrics,
                  jit_compile=jit)
    if thaw:  # the optimizer holds state for the encoder's variables from the start (resume, unfreezing)
        with thawed(thaw, keep_bn_frozen=config.freeze_encoder_bn):
            model.optimizer.build(model.trainable_variables)
    return loss, metrics


def make_loss(config, num_classes: int, weights=None):
    """``--loss`` (with per-class ``weights``), fed sparse targets with ``--sparse``."""
    from kseg import losses
    from kseg.training.callbacks import SparseAdapter

    loss = losses.get(config.loss, **({"class_weights": weights} if weights is not None else {}))
    return SparseAdapter(loss, num_classes) if config.sparse else loss


def make_metrics(config, num_classes: int, binary: bool) -> list:
    """Pixel accuracy and mIoU; for a binary model over (background, foreground) at ``--threshold``, with the
    foreground's IoU."""
    from kseg import metrics as kmetrics

    if binary:
        t = config.threshold
        return [kmetrics.PixelAccuracy(2, threshold=t), kmetrics.MeanIoU(2, threshold=t),
                kmetrics.IoU(2, class_id=1, name="iou_foreground", threshold=t)]
    return [kmetrics.PixelAccuracy(num_classes), kmetrics.MeanIoU(num_classes)]


def make_optimizer(args, total_steps: int, warmup_steps: int = 0, late_variables: bool = False,
                   lr_multipliers: dict | None = None):
    """The optimizer ``args`` (a :class:`~kseg.training.config.TrainConfig`) ask for, with its learning-rate
    schedule (see :mod:`kseg.schedules`): Adam, AdamW or SGD (momentum 0.9) from :mod:`kseg.optimizers`
    (Keras's, Adam's with TensorFlow's fused update kernel). With ``late_variables`` (an encoder that
    ``--freeze-epochs`` unfreezes later) Adam counts its steps per variable, so the encoder's first updates
    have Adam's usual size. ``lr_multipliers`` ({variable path: factor}, see :func:`encoder_lr_multipliers`)
    scale those variables' learning rate. ``args.ema`` (a momentum) turns on Keras's moving average of the
    weights (``use_ema``; see :func:`kseg.training.fit` for where the averaged weights are used)."""
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


def _weights_from_counts(spec: str, counts):
    import numpy as np

    freq = counts / max(int(counts.sum()), 1)
    present = freq > 0
    w = np.zeros(len(counts))
    if spec == "balanced":
        w[present] = 1.0 / (present.sum() * freq[present])
    elif spec == "median":
        w[present] = np.median(freq[present]) / freq[present]
    else:
        w[present] = 1.0 / np.sqrt(freq[present])
        w[present] /= w[present].mean()
    return [float(v) for v in w]


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
    return _weights_from_counts(spec, counts)
