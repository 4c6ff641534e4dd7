"""Learned multi-scale attention against one scale and average test-time augmentation, on iccv09 folds, as JSON.

    .venv/bin/python bench/multiscale_compare.py [--recipe regions-fast] [--folds 0,1] [--epochs 4] \\
        [--variants single,hierarchical,attention] [--out bench/results/multiscale]

For each fold, three models with the same recipe and the same number of epochs (``python -m kseg.train``):

- ``single``: the recipe as it is, scored at one scale and with average test-time augmentation over 0.5,1
  and 0.5,1,2 (``kseg evaluate --scales``);
- ``hierarchical``: ``--multiscale hierarchical --train-scales 0.5,1``, its attention merging 0.5,1 (the
  trained scales) and 0.5,1,2, with each scale's trunk alone (``report.json`` ``per_scale``);
- ``attention``: ``--multiscale attention --train-scales 0.5,1`` (explicit attention: the trained scales only).

Every score is on the fold's validation photos at their native resolution (``kseg evaluate --native`` /
``--scales``: one confusion matrix, unknown pixels ignored). A finished run or evaluation is reused when the
script starts again, so a killed comparison resumes. The JSON has one row per fold and model/scales, and the
mean over the folds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = ("miou", "pixel_accuracy", "mean_accuracy")
# (variant, label, evaluate options)
EVALS = {
    "single": [("one scale (1)", ["--native"]),
               ("average TTA 0.5,1", ["--scales", "0.5,1"]),
               ("average TTA 0.5,1,2", ["--scales", "0.5,1,2"])],
    "hierarchical": [("hierarchical 0.5,1 (trained)", ["--native"]),
                     ("hierarchical 0.5,1,2", ["--scales", "0.5,1,2"])],
    "attention": [("explicit attention 0.5,1 (trained)", ["--native"])],
}
TRAIN = {"single": [], "hierarchical": ["--multiscale", "hierarchical", "--train-scales", "0.5,1"],
         "attention": ["--multiscale", "attention", "--train-scales", "0.5,1"]}


def _accuracy_bench():
    spec = importlib.util.spec_from_file_location("kseg_bench_accuracy", REPO / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(cmd, env) -> float:
    print("bench: " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
    t0 = time.time()
    res = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, env=env, stdout=sys.stderr)
    if res.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd[2:4])} failed with status {res.returncode}")
    return round(time.time() - t0, 1)


def compare(variant: str, fold: int, args, env) -> list[dict]:
    rows = []
    run = Path(args.out) / f"{variant}-fold{fold}"
    extra = TRAIN[variant] + (["--eval-scales", "0.5,1"] if variant != "single" else [])
    if not (run / "metrics.json").is_file():
        _run(["python", "-m", "kseg.train", "--recipe", args.recipe, "--fold", str(fold), "--epochs",
              str(args.epochs), "--out", str(run), "--no-export", "--verbose", "2", *extra], env)
    train_s = json.loads((run / "metrics.json").read_text()).get("seconds")
    for i, (label, opts) in enumerate(EVALS[variant]):
        where = run / f"eval{i}"
        seconds = None
        if not (where / "report.json").is_file():
            seconds = _run(["python", "-m", "kseg.evaluate", "--model", str(run / "best.keras"), *opts,
                            "--out", str(where)], env)
        report = json.loads((where / "report.json").read_text())
        row = {"fold": fold, "model": variant, "scored": label, **{k: round(report[k], 4) for k in KEYS},
               "train_seconds": train_s, "eval_seconds": seconds, "run": str(run)}
        if report.get("per_scale"):
            row["per_scale"] = report["per_scale"]
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="regions-fast")
    p.add_argument("--folds", default="0,1")
    p.add_argument("--epochs", type=int, default=4, help="the same for every model (default 4)")
    p.add_argument("--variants", default="single,hierarchical,attention")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "multiscale"))
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in TRAIN]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}: choose from {', '.join(TRAIN)}")
    bench = _accuracy_bench()
    env = bench._keras_home(dict(os.environ))
    folds = [int(f) for f in args.folds.split(",")]
    rows = [r for v in args.variants for k in folds for r in compare(v, k, args, env)]
    means = []
    for label in dict.fromkeys(r["scored"] for r in rows):
        same = [r for r in rows if r["scored"] == label]
        means.append({"scored": label, "folds": [r["fold"] for r in same],
                      **{k: round(statistics.mean(r[k] for r in same), 4) for k in KEYS}})
    print(json.dumps({"bench": "multiscale_compare", "recipe": args.recipe, "epochs": args.epochs,
                      "rows": rows, "mean_over_folds": means, "machine": bench._machine()}, indent=1))


if __name__ == "__main__":
    main()
