"""Time to accuracy: wall seconds of training until a validation target, kseg's fast recipe against the
tutorial's own training (segmentation_models 1.0.1), side by side in one run, JSON out.

    .venv/bin/python bench/time_to_accuracy.py [--task surfaces|regions|both] [--ratio 8] [--quick]

For each task (``surfaces``: pixel accuracy >= 0.90; ``regions``: >= 0.80), on iccv09 fold 0 (the 80/20
split: 572 training, 143 validation images):

- **kseg**: ``python -m kseg.train --recipe <task>-fast`` as the library trains it (kseg.training's data,
  model, optimizer and schedule), evaluated after every epoch;
- **the peer**: the tutorial's training in segmentation_models 1.0.1 through tf-keras: ``sm.Unet("resnet34",
  classes=C, activation="softmax")``, 224x224 (images and one-hot masks resized bilinearly, as the tutorial
  does; unknown pixels are all-zero rows, so they add nothing to the loss), ``sm.get_preprocessing``, Adam
  1e-3, categorical cross-entropy, batch 16, shuffled, evaluated after every epoch, at most the tutorial's
  20 epochs.

Both are scored the same way after each epoch: every validation photo at its native size (resized to the
model's input, the probabilities resized back bilinearly), unknown pixels ignored, one confusion matrix over
the 143 photos. The clock counts training only (``model.fit``'s epochs, graph tracing included); the
evaluations and the data loading are timed apart and reported. Each side also reports its process CPU
seconds, which a busy machine changes less than wall seconds.

The peer stops early once its training clock passes ``--ratio`` times kseg's time to the target: if it has
not reached the target by then, kseg is at least that many times faster and the peer's own time is only
bounded (``"reached": false``). ``--peer-epochs`` caps it (default 20, the tutorial's).

The tutorial starts the resnet34 encoder from ImageNet weights, which segmentation_models downloads; with
``--peer-weights FILE`` (``resnet34_imagenet_1000_no_top.h5``) the peer uses them, else it starts from random
weights and the JSON says so. The peer is installed into ``bench/.venv-sm`` by bench/speed.py's
``ensure_peer`` (a measurement peer, never a kseg dependency). ``--quick``: 48 training and 16 validation
images, one epoch each, low targets: a smoke test of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import ROOT, _peer_env, ensure_peer, machine  # noqa: E402

TARGETS = {"surfaces": 0.90, "regions": 0.80}
CLASSES = {"surfaces": 3, "regions": 8}
PEER_SIZE, PEER_BATCH = 224, 16


def _now():
    t = os.times()
    return time.perf_counter(), t.user + t.system


class Clock:
    """Training wall and CPU seconds, summed over the spans between ``start()`` and ``stop()``."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self._t = None

    def start(self):
        self._t = _now()

    def stop(self):
        w, c = _now()
        self.wall += w - self._t[0]
        self.cpu += c - self._t[1]


def epoch_callback(keras, score, target: float, clock: Clock, rows: list, budget=None):
    """A Keras callback: the clock runs during each epoch; after it, ``score()`` (timed apart) appends a row and
    stops training at ``target``, or once the clock passes ``budget`` seconds."""

    class Timed(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            clock.start()

        def on_epoch_end(self, epoch, logs=None):
            clock.stop()
            t = time.perf_counter()
            acc, miou = score(self.model)
            rows.append({"epoch": epoch + 1, "train_seconds": round(clock.wall, 1), "train_cpu_seconds":
                         round(clock.cpu, 1), "pixel_accuracy": round(acc, 4), "miou": round(miou, 4),
                         "eval_seconds": round(time.perf_counter() - t, 1), "loss": round(float(logs["loss"]), 4)})
            print("ROW " + json.dumps(rows[-1]), flush=True)
            if acc >= target or (budget is not None and clock.wall > budget):
                self.model.stop_training = True

    return Timed()


def _result(rows, target, clock, setup, extra) -> dict:
    hit = next((r for r in rows if r["pixel_accuracy"] >= target), None)
    return {"reached": hit is not None, "seconds": hit["train_seconds"] if hit else None,
            "cpu_seconds": hit["train_cpu_seconds"] if hit else None, "epochs": hit["epoch"] if hit else None,
            "trained_seconds": round(clock.wall, 1), "trained_cpu_seconds": round(clock.cpu, 1),
            "eval_seconds": round(sum(r["eval_seconds"] for r in rows), 1), "setup_seconds": round(setup, 1),
            "best_pixel_accuracy": max((r["pixel_accuracy"] for r in rows), default=None), "rows": rows, **extra}


# --------------------------------------------------------------------------- kseg's side (kseg's venv)

def worker_kseg(a) -> dict:
    t0 = time.perf_counter()
    import keras

    from kseg.evaluation import evaluate_native
    from kseg.training.config import TrainConfig
    from kseg.training.data import load_data
    from kseg.training.fit import build

    options = dict(fold=0, out=tempfile.mkdtemp(prefix="kseg-tta-"), verbose=0)
    if a.quick:
        options.update(limit=64, epochs=1)
    config = TrainConfig.from_recipe(f"{a.task}-fast", **options)
    keras.utils.set_random_seed(config.seed)
    data = load_data(config)
    model = build(config, data)[0]
    val = data.val_idx[:16] if a.quick else data.val_idx
    paths, labels = [data.ds.image_paths[i] for i in val], [data.ds.labels[i] for i in val]

    def score(m):
        s = evaluate_native(m, paths, labels, data.ds.class_names, size=config.size)
        return s["pixel_accuracy"], s["miou"]

    clock, rows = Clock(), []
    setup = time.perf_counter() - t0
    model.fit(data.train_ds, steps_per_epoch=data.steps_per_epoch, epochs=config.epochs, verbose=0,
              callbacks=[epoch_callback(keras, score, a.target, clock, rows)])
    return _result(rows, a.target, clock, setup, {
        "recipe": f"{a.task}-fast", "command": f"python -m kseg.train --recipe {a.task}-fast",
        "options": {k: v for k, v in config.as_dict().items() if k in (
            "model", "backbone", "encoder_weights", "size", "batch_size", "optimizer", "lr", "schedule", "warmup",
            "epochs", "augment", "bn_momentum", "weight_decay", "loss")},
        "train_images": len(data.train_idx), "val_images": len(val)})


# --------------------------------------------------------------------------- the peer's side (bench/.venv-sm)

def _peer_arrays(task: str, limit: int | None):
    """The tutorial's inputs from the split file written by the parent: 224x224 training images and bilinearly
    resized one-hot masks; the validation photos and label maps at native size."""
    import numpy as np
    import tensorflow as tf

    split = json.loads(Path(os.environ["KSEG_TTA_SPLIT"]).read_text())
    classes = CLASSES[task]

    def photo(path):
        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3)

    def label(path):
        return np.loadtxt(path, dtype=np.int64, ndmin=2)

    xs, ys = [], []
    for img_path, lab_path in split["train"][:limit]:
        xs.append(tf.image.resize(photo(img_path), (PEER_SIZE, PEER_SIZE)).numpy())
        lab = label(lab_path)
        onehot = (lab[..., None] == np.arange(classes)).astype(np.float32)  # unknown (-1): all zeros
        ys.append(tf.image.resize(onehot, (PEER_SIZE, PEER_SIZE)).numpy())
    val = [(photo(i).numpy(), label(lb)) for i, lb in split["val"][: (16 if limit else None)]]
    return np.stack(xs), np.stack(ys), val


def peer_scorer(val, preprocess, classes: int):
    """``score(model) -> (pixel accuracy, mIoU)`` at native resolution, unknown pixels ignored."""
    import numpy as np
    import tensorflow as tf

    batch = np.stack([tf.image.resize(im, (PEER_SIZE, PEER_SIZE)).numpy() for im, _ in val])

    def score(model):
        probs = model.predict(preprocess(batch.copy()), batch_size=PEER_BATCH, verbose=0)
        cm = np.zeros((classes, classes), np.int64)
        for p, (_, lab) in zip(probs, val):
            pred = tf.argmax(tf.image.resize(p, lab.shape), axis=-1).numpy()
            keep = lab >= 0
            cm += np.bincount(lab[keep] * classes + pred[keep], minlength=classes * classes).reshape(classes,
                                                                                                    classes)
        union = cm.sum(0) + cm.sum(1) - np.diag(cm)
        present = union > 0  # kseg.metrics.scores' rule: classes in the truth or the prediction
        return float(np.trace(cm) / cm.sum()), float((np.diag(cm)[present] / union[present]).mean())

    return score


def worker_peer(a) -> dict:
    t0 = time.perf_counter()
    import segmentation_models as sm
    import tensorflow as tf

    tf.keras.utils.set_random_seed(42)
    classes = CLASSES[a.task]
    x, y, val = _peer_arrays(a.task, 48 if a.quick else None)
    preprocess = sm.get_preprocessing("resnet34")
    x = preprocess(x)
    weights = a.peer_weights or None
    model = sm.Unet("resnet34", input_shape=(PEER_SIZE, PEER_SIZE, 3), classes=classes, activation="softmax",
                    encoder_weights=None)
    if weights:
        model.load_weights(weights, by_name=True, skip_mismatch=True)  # the encoder's layers, by name
    model.compile(tf.keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    clock, rows = Clock(), []
    budget = a.budget if a.budget and a.budget > 0 else None
    setup = time.perf_counter() - t0
    model.fit(x, y, batch_size=PEER_BATCH, epochs=1 if a.quick else a.peer_epochs, shuffle=True, verbose=0,
              callbacks=[epoch_callback(tf.keras, peer_scorer(val, preprocess, classes), a.target, clock, rows,
                                        budget)])
    return _result(rows, a.target, clock, setup, {
        "model": "segmentation_models 1.0.1 Unet('resnet34'), 224x224, Adam 1e-3, categorical cross-entropy, "
                 "batch 16, bilinearly resized one-hot masks", "encoder_weights": weights or "none (random)",
        "epochs_cap": a.peer_epochs, "budget_seconds": budget, "train_images": len(x), "val_images": len(val)})


def worker_main(argv) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("side", choices=("kseg", "peer"))
    p.add_argument("--task", required=True)
    p.add_argument("--target", type=float, required=True)
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--peer-epochs", type=int, default=20)
    p.add_argument("--peer-weights", default=None)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    result = worker_kseg(a) if a.side == "kseg" else worker_peer(a)
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- the parent (kseg's venv)

def write_split(task: str, path: Path) -> None:
    """Fold 0's training and validation (photo, label file) pairs, as kseg splits them, for the peer."""
    from kseg.data import find_iccv09, load_iccv09
    from kseg.data.pipeline import fold_indices

    ds = load_iccv09(find_iccv09(), mask=task)  # checks that every label file is there
    train, val = fold_indices(ds.ids, 0)
    root = Path(ds.root)
    pairs = [(str(ds.image_paths[i]), str(root / "labels" / f"{ds.ids[i]}.{task}.txt")) for i in range(len(ds))]
    path.write_text(json.dumps({"train": [pairs[i] for i in train], "val": [pairs[i] for i in val]}))


def run(python, side: str, args: list, env: dict, log) -> dict:
    """The worker in a fresh process; its rows as they come, its RESULT JSON."""
    import subprocess

    cmd = [str(python), str(Path(__file__).resolve()), "--worker", side, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    result = None
    for line in proc.stdout:
        if line.startswith("ROW "):
            log(f"  {side}: {line[4:].strip()}")
        elif line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    err = proc.stderr.read()
    if proc.wait() or result is None:
        raise SystemExit(f"bench/time_to_accuracy.py: the {side} worker failed ({proc.returncode}):\n{err[-3000:]}")
    return result


def bench_task(task: str, a, peer_py, log) -> dict:
    target = 0.5 if a.quick else TARGETS[task]
    common = ["--task", task, "--target", str(target)] + (["--quick"] if a.quick else [])
    quiet = dict(TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="")
    from accuracy import _keras_home  # bench/ is on sys.path (top of this file)

    log(f"{task}: kseg's {task}-fast recipe until pixel accuracy {target}")
    kseg = run(sys.executable, "kseg", common, _keras_home({**os.environ, **quiet}), log)
    budget = a.ratio * kseg["seconds"] if kseg["reached"] else None
    split = Path(tempfile.mkdtemp(prefix="kseg-tta-")) / "split.json"
    write_split(task, split)
    log(f"{task}: the peer until pixel accuracy {target}"
        + (f", or {budget:.0f} s of training ({a.ratio:g}x kseg's)" if budget else ""))
    peer_args = [*common, "--peer-epochs", str(a.peer_epochs)] + (["--budget", str(budget)] if budget else [])
    if a.peer_weights:
        peer_args += ["--peer-weights", str(Path(a.peer_weights).resolve())]
    peer = run(peer_py, "peer", peer_args, {**_peer_env(), **quiet, "KSEG_TTA_SPLIT": str(split)}, log)
    return {"target_pixel_accuracy": target, "kseg": kseg, "peer": peer, **compare(kseg, peer)}


def compare(kseg: dict, peer: dict, goal: float = 8.0) -> dict:
    """How many times faster kseg reached the target: ``speedup`` when both did; ``speedup_at_least`` when only
    kseg did (the peer's time is beyond what it trained); neither when kseg did not. ``target_met``: >= goal."""
    out = {}
    if kseg["reached"] and peer["reached"]:
        out["speedup"] = round(peer["seconds"] / kseg["seconds"], 2)
        out["speedup_cpu"] = round(peer["cpu_seconds"] / kseg["cpu_seconds"], 2)
    elif kseg["reached"]:
        out["speedup_at_least"] = round(peer["trained_seconds"] / kseg["seconds"], 2)
        out["speedup_cpu_at_least"] = round(peer["trained_cpu_seconds"] / kseg["cpu_seconds"], 2)
    out["target_met"] = out.get("speedup", out.get("speedup_at_least", 0.0)) >= goal
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("surfaces", "regions", "both"), default="both")
    p.add_argument("--ratio", type=float, default=8.0,
                   help="stop the peer once its training passes this many times kseg's time (0: never)")
    p.add_argument("--peer-epochs", type=int, default=20, help="the peer's most epochs (the tutorial's 20)")
    p.add_argument("--peer-weights", default=None, metavar="FILE",
                   help="segmentation_models' resnet34 ImageNet encoder file (default: random weights)")
    p.add_argument("--quick", action="store_true", help="a few images, one epoch: a smoke test")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "time_to_accuracy.json"))
    a = p.parse_args(argv)
    if a.peer_weights and not Path(a.peer_weights).is_file():
        raise SystemExit(f"bench/time_to_accuracy.py: {a.peer_weights}: no such file")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.time()
    peer_py = ensure_peer(log)
    res = {"bench": "time_to_accuracy", "quick": a.quick, "ratio": a.ratio, "machine": machine(),
           "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for task in (("surfaces", "regions") if a.task == "both" else (a.task,)):
        res[task] = bench_task(task, a, peer_py, log)
    res["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
