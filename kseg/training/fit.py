"""``fit(config)``: one training run, from the data to the outputs.

data → model → compile → callbacks → ``model.fit`` → outputs. The output folder (``config.out``) gets
``best.keras``, ``history.csv``, ``curves.png``, ``predictions.png``, ``metrics.json``, ``run.json`` and
``saved_model/`` (see :mod:`kseg.train` for each), and ``.backup/`` while the run is unfinished: the same
config run again resumes from its last finished epoch.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from kseg.errors import KsegError
from kseg.training.config import TrainConfig


def fit(config: TrainConfig) -> dict:
    """Train as ``config`` says; return the validation metrics of the best model (``{}`` on a multi-worker
    run's non-chief workers).

    With ``config.ema`` the optimizer keeps a moving average of the trained weights, and Keras's
    ``SwapEMAWeights`` puts the averaged weights in the model while it validates; ``best.keras`` is saved
    with them (so the final evaluation and the export use them), and the resume state keeps the trained
    weights with their average (in the optimizer's state), so a resumed run goes on as if never stopped.

    The model trains under Keras's dtype policy ``config.precision`` (restored afterwards); what is evaluated
    and exported at the end is best.keras's float32 copy (:func:`kseg.saving.load_keras_model`)."""
    from kseg import precision
    from kseg.distribute import gpus

    for line in config.warnings():
        print(line, file=sys.stderr)
    note = precision.warning(config.precision, gpus=len(gpus())) if config.precision != "float32" else None
    if note:
        print(note, file=sys.stderr, flush=True)
    with precision.policy(config.precision):
        return _fit(config)


def _fit(config: TrainConfig) -> dict:
    """:func:`fit` under its dtype policy."""
    import keras
    import numpy as np

    from kseg import distribute
    from kseg.runinfo import write_run_info
    from kseg.training import report, resume
    from kseg.training.data import load_data

    out, strategy, chief = prepare_output(config)
    keras.utils.set_random_seed(config.seed)
    t0 = time.time()
    data = load_data(config)
    model, thaw, loss, metrics = build(config, data, strategy)
    info = report.run_info(config, data)
    if chief:
        write_run_info(out, info)
    key = resume.resume_key(config, data)
    initial_epoch, rows = resume.resume(model, out, key, config, strategy)
    callbacks, recorder, validation_data = make_callbacks(config, data, out, key, rows, initial_epoch, thaw,
                                                          loss, metrics, strategy)
    train(model, config, data, callbacks, initial_epoch, validation_data)
    check_finite(recorder, config, out)
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
        distribute.barrier(strategy)  # wait for the chief's outputs
        print("kseg: worker finished; the chief wrote the outputs", flush=True)
        return {}
    scores = write_outputs(model, config, data, out, t0)
    write_run_info(out, {**info, "finished": True})
    shutil.rmtree(out / ".backup", ignore_errors=True)  # every output is written: nothing left to resume
    print(report.closing_line(config, data, scores, out), flush=True)
    np.random.seed(None)
    distribute.barrier(strategy)  # the other workers wait for these outputs
    return scores


def prepare_output(config: TrainConfig):
    """``(out, strategy, chief)``: the output folder, checked writable and cleared of a finished run (see
    :func:`kseg.training.resume.clear_finished_run`); the ``tf.distribute`` strategy (created first: multi-worker
    collectives are set up at start-up); and whether this process is the chief. A non-chief worker's ``out`` is
    a folder of its own (it saves what the chief saves, as saving may read distributed variables)."""
    from kseg import distribute
    from kseg.training.resume import clear_finished_run

    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise KsegError(f"{out}: output folder is not writable ({err.strerror})") from None
    clear_finished_run(out, config.overwrite)
    strategy = distribute.get_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    if not chief:
        out = distribute.worker_dir(out, chief=False)
        out.mkdir(parents=True, exist_ok=True)
    if strategy is not None:
        print(f"kseg: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replicas; "
              f"global batch {config.batch_size}", flush=True)
    return out, strategy, chief


def build(config: TrainConfig, data, strategy=None):
    """``(model, thaw, loss, metrics)``: the compiled model in ``strategy``'s scope (see
    :mod:`kseg.training.model`); ``data``'s pipelines are sharded by data for a strategy."""
    from kseg import distribute
    from kseg.training.model import build_model, compile_model

    if strategy is not None:
        data.train_ds, data.val_ds = distribute.shard_by_data(data.train_ds), distribute.shard_by_data(data.val_ds)
    with distribute.scope(strategy):  # model, optimizer and metrics live on every replica
        model, thaw, lr_multipliers = build_model(config, data.ds.num_classes, data.binary)
        distribute.sync_batch_norm(model, strategy)
        loss, metrics = compile_model(model, config, data, thaw, lr_multipliers, strategy)
        distribute.build_for_fit(model, strategy, data.train_ds)
    return model, thaw, loss, metrics


def make_callbacks(config: TrainConfig, data, out: Path, key: dict, rows, initial_epoch: int, thaw, loss, metrics,
                   strategy=None):
    """``(callbacks, recorder, validation_data)`` for ``model.fit``: the :class:`RunRecorder` (history.csv,
    best.keras; ``rows`` and ``initial_epoch`` are a resumed run's past), the curves, the resume state (``key``:
    see :func:`kseg.training.resume.resume_key`), and, as asked, the weight average's swap, the encoder's
    unfreezing and a multi-worker run's local validation (which then replaces ``fit``'s)."""
    import keras

    from kseg import distribute
    from kseg.training.callbacks import CurvesCallback, ResumeState, RunRecorder, Unfreeze
    from kseg.training.resume import best_so_far

    # with --ema, validation (Keras swaps on test begin/end) and best.keras see the averaged weights
    swap = keras.callbacks.SwapEMAWeights() if config.ema else None
    recorder = RunRecorder(out / "history.csv", rows, out / "best.keras", config.monitor,
                           *best_so_far(rows, config.monitor),
                           last_good_epoch=initial_epoch - 1 if initial_epoch else None, ema=swap,
                           thaw=thaw, keep_bn_frozen=config.freeze_encoder_bn)
    callbacks = [recorder, CurvesCallback(out / "history.csv", out / "curves.png"),
                 ResumeState(out / ".backup", key, recorder)]
    if swap is not None:
        callbacks.insert(0, swap)
    if thaw:
        callbacks.insert(0, Unfreeze(thaw, config.freeze_epochs, keep_bn_frozen=config.freeze_encoder_bn))
    if config.early_stop:  # after the recorder, so the epoch that stops the run is logged and checkpointed
        from kseg.training.resume import monitor_mode

        callbacks.append(keras.callbacks.EarlyStopping(config.monitor, patience=config.early_stop,
                                                       mode=monitor_mode(config.monitor), verbose=1))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(config.tensorboard, write_graph=False, profile_batch=0))
    validation_data = data.val_ds
    if distribute.multi_worker(strategy) and data.val_ds is not None:  # each worker validates on the whole set
        callbacks.insert(0, distribute.local_validation(data.val_ds, loss, metrics, ema=swap))
        validation_data = None
    return callbacks, recorder, validation_data


def train(model, config: TrainConfig, data, callbacks, initial_epoch: int, validation_data) -> None:
    """``model.fit`` from ``initial_epoch`` to ``config.epochs``; a file that cannot be read mid-run is a
    one-line error (the last finished epoch is kept for resuming)."""
    import tensorflow as tf

    if initial_epoch >= config.epochs:
        return
    verbose = config.verbose if config.verbose is not None else ("auto" if sys.stdout.isatty() else 2)
    try:
        model.fit(data.train_ds, steps_per_epoch=data.steps_per_epoch, epochs=config.epochs,
                  initial_epoch=initial_epoch, validation_data=validation_data, callbacks=callbacks,
                  verbose=verbose, shuffle=False)
    except tf.errors.InvalidArgumentError as err:
        if "IteratorGetNext" not in str(err):
            raise
        detail = next((ln for ln in str(err).splitlines() if "Error in user-defined" in ln or "failed" in ln),
                      str(err).splitlines()[0])
        raise KsegError(f"{data.ds.root}: a file could not be read during training ({detail.strip()[-200:]}); "
                        f"the last finished epoch is kept: fix or remove the file and run again "
                        f"to resume") from None


def check_finite(recorder, config: TrainConfig, out: Path) -> None:
    """A one-line error if the loss became NaN (``recorder.nan_at``): where, and what was kept."""
    if recorder.nan_at is None:
        return
    epoch, batch = recorder.nan_at
    best_path = out / "best.keras"
    kept = (f"the last good checkpoint {best_path} (epoch {recorder.best_epoch + 1}) is kept"
            if recorder.best_epoch is not None else f"no checkpoint was better before it, so {best_path} "
                                                    f"was not written")
    resume = (f"running again (with a lower --lr, say) resumes after epoch {recorder.last_good_epoch + 1}"
              if recorder.last_good_epoch is not None else "run again with a lower --lr")
    raise KsegError(f"{out / 'history.csv'}: the loss became NaN in epoch {epoch + 1}, batch {batch + 1}; "
                    f"training stopped (--lr {config.lr:g}): {kept}; {resume}")


def write_outputs(model, config: TrainConfig, data, out: Path, t0: float) -> dict:
    """Score best.keras's float32 copy (metrics.json, and at native resolution if asked), draw
    predictions.png and export the SavedModel (or remove an earlier one with ``--no-export``); return the
    scores."""
    from kseg.saving import load_keras_model as load_model
    from kseg.serving import export_saved_model
    from kseg.models.layers import float32_copy
    from kseg.training import report

    best_path = out / "best.keras"
    best = load_model(best_path) if best_path.exists() else float32_copy(model)
    extra = report.run_summary(config, data, time.time() - t0)
    if config.eval_scales is not None or config.eval_flip or config.eval_output_stride:
        extra["native"] = report.evaluate_native(best, config, data)
    threshold = config.threshold if data.binary else None
    scores = report.evaluate_to_json(best, data.val_ds, data.ds.class_names, out / "metrics.json", extra=extra,
                                     threshold=threshold)
    report.save_predictions(best, data.ds, data.val_idx, config.size, out / "predictions.png", threshold=threshold)
    if not config.no_export:
        export_saved_model(best, out / "saved_model", tflite=not config.no_tflite)
    else:  # a SavedModel of an earlier model would be out of step with this best.keras
        shutil.rmtree(out / "saved_model", ignore_errors=True)
    return scores

