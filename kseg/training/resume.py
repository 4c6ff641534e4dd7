"""A run folder's past: a finished run (never trained over without ``--overwrite``), or an interrupted one
(``.backup/state.json``, the weights it names, and ``history.csv``) that the same command resumes."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
import sys
from pathlib import Path

from kseg.errors import KsegError
from kseg.runinfo import RUN_FILE

RESUME_STATE = "state.json"
RUN_OUTPUTS = ("best.keras", "history.csv", "curves.png", "predictions.png", "metrics.json", "saved_model",
               RUN_FILE, ".backup")


def monitor_mode(monitor: str) -> str:
    """"min" for a loss, "max" for any other monitored value (accuracy, IoU)."""
    return "min" if "loss" in monitor else "max"


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


def read_history(csv_path: Path, before_epoch: int) -> list[dict]:
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


def best_so_far(rows: list[dict], monitor: str) -> tuple[float | None, int | None]:
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
    return min(vals) if monitor_mode(monitor) == "min" else max(vals, key=lambda t: (t[0], -t[1]))


def resume_key(config, data) -> dict:
    """The options an interrupted run must share with the command that resumes it (``state.json``'s
    ``config``): what shapes the model and its optimizer's state."""
    key = {"data_format": config.data_format, "mask": data.ds.mask, "model": config.model,
           "backbone": config.backbone, "size": list(config.size), "classes": data.ds.num_classes,
           "fold": config.fold}
    if data.binary:  # a binary run's model has one output channel
        key["binary"] = True
    if config.ema:  # the optimizer's state then holds the averages: resuming needs the same
        key["ema"] = config.ema
    return key


def resume(model, out: Path, key: dict, config, strategy=None) -> tuple[int, list[dict]]:
    """``(epoch to start at, history rows before it)``: the interrupted run in ``out`` restored into ``model``
    (its weights and its optimizer's state, see :func:`restore_resume_state`), or ``(0, [])`` if none."""
    from kseg import distribute

    backup = out / ".backup"
    state = read_resume_state(backup, key)
    if state is None:
        return 0, []
    with distribute.scope(strategy):
        initial_epoch = restore_resume_state(model, backup, state, config.lr)
    print(f"kseg: resuming from {backup} at epoch {initial_epoch + 1} of {config.epochs}", flush=True)
    return initial_epoch, read_history(out / "history.csv", initial_epoch)
