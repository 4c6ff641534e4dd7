"""Accuracy benchmark: train a recipe on an iccv09 fold and print its scores as JSON.

    python bench/accuracy.py --recipe regions-mobilenetv2 [--fold 0] [--data PATH] [-- extra kseg.train options]
    python bench/accuracy.py --recipe regions-mobilenetv2 --folds 0,1,2,3,4      # mean and std over folds
    python bench/accuracy.py --existing runs/DIR     # report a finished run (its recipe is read from it)

Each fold runs ``python -m kseg.train --recipe R --fold K --out bench/results/accuracy/R-foldK``
(a killed run resumes where it stopped when started again), then the script
reads that run's ``metrics.json`` and prints one JSON object: validation pixel
accuracy, mean class accuracy and mIoU (at the training size, and at native
resolution with the recipe's test-time scales and flips, the protocol of the
Stanford Background papers), the wall time, the options the run resolved (recipe and command line
together, as metrics.json records them), the command and the machine. With
several folds it adds their mean and standard deviation. The result is also
written to ``bench/results/accuracy-<recipe>.json`` (``--results`` to change the folder).

The ImageNet encoder weights come from ``$KERAS_HOME/models`` as Keras
expects; with no internet, the script points ``KERAS_HOME`` at a temporary
folder linking ``../shared/weights/`` when that folder exists and Keras has no
copy of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = REPO.parent / "shared" / "weights"
KEYS = ("pixel_accuracy", "mean_accuracy", "miou", "fw_iou")


def _keras_home(env: dict) -> dict:
    home = Path(env.get("KERAS_HOME", Path.home() / ".keras"))
    if SHARED_WEIGHTS.is_dir():
        missing = [f for f in SHARED_WEIGHTS.glob("*.h5") if not (home / "models" / f.name).exists()]
        if missing:
            tmp = Path(tempfile.mkdtemp(prefix="kseg-keras-home-"))
            (tmp / "models").mkdir()
            for f in SHARED_WEIGHTS.glob("*.h5"):
                (tmp / "models" / f.name).symlink_to(f)
            env = {**env, "KERAS_HOME": str(tmp)}
    return env


def _machine() -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "gpu": [g.name for g in gpus] or None}


def score(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    row = {"run": str(run_dir), "fold": m.get("fold"), "recipe": m.get("recipe"), "mask": m.get("mask"),
           "model": m.get("model"), "backbone": m.get("backbone"), "epochs": m.get("epochs"),
           "size": m.get("size"), "train_images": m.get("train_images"), "val_images": m.get("val_images"),
           "train_seconds": m.get("seconds"), "options": m.get("options"),
           "at_training_size": {**{k: round(m[k], 4) for k in KEYS},
                                "per_class_iou": {c: round(v, 4) for c, v in m["iou"].items()}}}
    if m.get("native"):
        n = m["native"]
        row["native"] = {**{k: round(n[k], 4) for k in KEYS}, "scales": n.get("scales"), "flip": n.get("flip"),
                         "output_stride": n.get("output_stride"),
                         "per_class_iou": {c: round(v, 4) for c, v in n["iou"].items()},
                         "eval_seconds": n.get("seconds")}
    return row


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=None, help="a kseg.train recipe (with --existing: the run's own)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", default=None, help="several folds, e.g. 0,1,2,3,4")
    p.add_argument("--data", default=None, help="iccv09Data folder or archive (default: kseg's search)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "accuracy"))
    p.add_argument("--results", default=str(REPO / "bench" / "results"), help="where the JSON is also written")
    p.add_argument("--existing", default=None, help="score this finished run folder instead of training")
    args = p.parse_args(argv)

    runs = []
    if args.existing:
        if not (Path(args.existing) / "metrics.json").is_file():
            sys.exit(f"bench: {Path(args.existing) / 'metrics.json'}: not found; give the folder of a finished run")
        runs.append({**score(Path(args.existing)), "trained_by": "an earlier run (--existing)"})
        args.recipe = args.recipe or runs[0]["recipe"] or "custom"
    elif args.recipe is None:
        p.error("give --recipe (or --existing RUN_DIR)")
    else:
        folds = [int(f) for f in args.folds.split(",")] if args.folds else [args.fold]
        env = _keras_home(dict(os.environ))
        for k in folds:
            out = Path(args.out) / f"{args.recipe}-fold{k}"
            cmd = [sys.executable, "-m", "kseg.train", "--recipe", args.recipe, "--fold", str(k), "--out", str(out),
                   "--verbose", "2", *(["--data", args.data] if args.data else []), *extra]
            print("bench: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
            t0 = time.time()
            res = subprocess.run(cmd, cwd=REPO, env=env, stdout=sys.stderr)  # stdout stays pure JSON
            if res.returncode != 0:
                sys.exit(f"bench: kseg.train failed with status {res.returncode} on fold {k}")
            runs.append({**score(out), "wall_seconds": round(time.time() - t0, 1),
                         "command": "python -m kseg.train " + " ".join(shlex.quote(c) for c in cmd[3:])})
    report = {"bench": "accuracy", "recipe": args.recipe, "runs": runs, "machine": _machine()}
    if len(runs) > 1:
        for where in ("at_training_size", "native"):
            if all(where in r for r in runs):
                report[f"{where}_mean"] = {k: round(statistics.mean(r[where][k] for r in runs), 4) for k in KEYS}
                report[f"{where}_std"] = {k: round(statistics.stdev(r[where][k] for r in runs), 4) for k in KEYS}
    text = json.dumps(report, indent=1)
    print(text)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"accuracy-{args.recipe}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
