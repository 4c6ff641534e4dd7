"""The Keras callbacks of a training run, and the loss adapter for sparse targets.

- :class:`RunRecorder`: ``history.csv`` and ``best.keras`` after each epoch (both written atomically); stops
  the run at a NaN loss.
- :class:`ResumeState`: the weights and the optimizer's state after each good epoch, for resuming.
- :class:`CurvesCallback`: ``curves.png`` from ``history.csv`` after epochs (at most every 20 s) and at the end.
- :class:`Unfreeze`: thaws the encoder at ``--freeze-epochs``.
- :class:`SparseAdapter`: a one-hot loss fed sparse targets (``--sparse``).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import keras

from kseg.errors import KsegError, atomic_path, write_text_atomic
from kseg.training.model import thaw_encoder, thawed
from kseg.training.resume import RESUME_STATE, monitor_mode


class Unfreeze(keras.callbacks.Callback):
    """At the start of epoch ``at`` make ``layers`` trainable again (see :func:`thaw_encoder`) and rebuild
    the train step."""

    def __init__(self, layers, at: int, keep_bn_frozen: bool = False):
        from kseg.models.layers import batch_norm_layers

        super().__init__()
        self.encoder_layers = list(layers)
        self.at = at
        self.keep_bn_frozen = keep_bn_frozen
        self._kept_bn = ({id(bn) for la in self.encoder_layers for bn in batch_norm_layers(la)}
                         if keep_bn_frozen else set())

    def _thawed(self, layer) -> bool:
        return layer.trainable or id(layer) in self._kept_bn

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.at and not all(self._thawed(la) for la in self.encoder_layers):
            thaw_encoder(self.encoder_layers, self.keep_bn_frozen)
            self.model.make_train_function(force=True)
            print(f"\nkseg: epoch {epoch + 1}: the encoder is unfrozen", flush=True)


class SparseAdapter(keras.losses.Loss):
    """Feed sparse targets (255 = ignored) to ``loss``, a loss written for one-hot targets."""

    def __init__(self, loss, num_classes: int):
        super().__init__(name=loss.name)
        self.loss = loss
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        from kseg.data.pipeline import to_one_hot

        y = y_true[..., 0] if len(y_true.shape) == len(y_pred.shape) else y_true
        return self.loss.call(to_one_hot(y, self.num_classes), y_pred)


def inference_model(model) -> keras.Model:
    """``model``'s layers and weights (shared, not copied) as an uncompiled model: saved, it holds no
    optimizer state, loss or metrics (Adam's two moments per weight would triple its size)."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


class RunRecorder(keras.callbacks.Callback):
    """After each epoch: ``history.csv`` (rewritten atomically), then ``best.keras`` if the monitored value
    improved (saved atomically, never for a non-finite loss); after each batch: stop the run when the loss is
    NaN or infinite (``nan_at`` then holds its (epoch, batch)).

    ``rows``, ``best``, ``best_epoch``, ``last_good_epoch``: a resumed run's past. ``ema``: a
    ``keras.callbacks.SwapEMAWeights`` of the same fit; ``best.keras`` is then saved with the averaged weights
    (those it validated). ``best.keras`` holds what inference needs: the model and its weights, uncompiled
    (:func:`inference_model`); the optimizer's state lives in the resume state (:class:`ResumeState`).
    ``thaw``: the encoder layers ``--freeze-epochs`` unfreezes later; a ``best.keras`` saved while they are
    still frozen is saved thawed (as :func:`thawed` with ``keep_bn_frozen``), so that the loaded model
    fine-tunes as a whole."""

    def __init__(self, csv_path, rows, best_path, monitor, best=None, best_epoch=None, last_good_epoch=None,
                 ema=None, thaw=(), keep_bn_frozen=False):
        super().__init__()
        self.csv_path, self.best_path, self.monitor = Path(csv_path), Path(best_path), monitor
        self.rows = list(rows)
        self.best, self.best_epoch, self.last_good_epoch = best, best_epoch, last_good_epoch
        self.ema, self.thaw, self.keep_bn_frozen = ema, list(thaw), keep_bn_frozen
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
        if self.monitor not in logs:
            raise KsegError(f"bad --monitor {self.monitor!r}: choose one of {', '.join(sorted(logs))}")
        current = logs[self.monitor]
        if math.isfinite(current) and self._better(current):
            self._save_best()
            self.best, self.best_epoch = current, epoch

    def _better(self, current: float) -> bool:
        if self.best is None:
            return True
        return current < self.best if monitor_mode(self.monitor) == "min" else current > self.best

    def _save_best(self) -> None:
        from kseg.optimizers import averaged_weights

        with (averaged_weights(self.ema), thawed(self.thaw, self.keep_bn_frozen),
              atomic_path(self.best_path, "checkpoint") as tmp):
            inference_model(self.model).save(tmp)

    def _write_history(self) -> None:
        keys = ["epoch"] + sorted({k for r in self.rows for k in r if k != "epoch"})
        with atomic_path(self.csv_path, "history") as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, keys, restval="", extrasaction="ignore")
                w.writeheader()
                w.writerows(self.rows)


class ResumeState(keras.callbacks.Callback):
    """After each epoch with a finite loss (as ``recorder``, the fit's :class:`RunRecorder`, saw it): the
    model's and the optimizer's variables into ``backup/epoch-N.weights.h5``, then ``backup/state.json``
    pointing at it (both atomic), with the run's ``config`` (see :func:`kseg.training.resume.read_resume_state`)."""

    def __init__(self, backup, config: dict, recorder):
        super().__init__()
        self.backup, self.config, self.recorder = Path(backup), dict(config), recorder

    def on_epoch_end(self, epoch, logs=None):
        if self.recorder.nan_at is not None or self.recorder.last_good_epoch != epoch:
            return  # never resume from a NaN model: the last good state stays
        try:
            self.backup.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise KsegError(f"{self.backup}: cannot create the resume folder ({err.strerror})") from None
        name = f"epoch-{epoch + 1}.weights.h5"
        with atomic_path(self.backup / name, "resume state") as tmp:
            self.model.save_weights(tmp)
        write_text_atomic(self.backup / RESUME_STATE, json.dumps({"epoch": epoch + 1, "weights": name,
                                                                   "config": self.config}), "resume state")
        for old in self.backup.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


class CurvesCallback(keras.callbacks.Callback):
    """Redraw the learning curves (``png_path``) from the CSV log (``csv_path``) after an epoch, at most every
    ``every`` seconds (drawing takes about a second: short epochs would spend their time on it), and when
    training ends."""

    def __init__(self, csv_path, png_path, every: float = 20.0):
        super().__init__()
        self.csv_path, self.png_path, self.every = csv_path, png_path, every
        self._drawn_at, self._pending = None, False

    def on_epoch_end(self, epoch, logs=None):
        self._pending = True
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.every:
            self._draw()

    def on_train_end(self, logs=None):
        if self._pending:
            self._draw()

    def _draw(self):
        from kseg.viz import plot_history

        self._drawn_at, self._pending = time.monotonic(), False
        try:
            plot_history(self.csv_path, self.png_path)
        except (OSError, ValueError) as err:
            print(f"kseg: warning: {self.png_path}: cannot draw curves ({err})", file=sys.stderr)
