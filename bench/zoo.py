"""Compare the architectures on iccv09 regions after one short, fixed training budget, as JSON.

    python bench/zoo.py [--pairs deeplabv3plus:mobilenetv2,unet:mobilenetv2,...] [--epochs 5] [--size 128x160]

Every pair trains with the same options (fold 0: 572 train / 143 validation
images; ImageNet encoder; AdamW 1e-3 with half an epoch of warm-up then
cosine; BatchNorm momentum 0.9; flip augmentation; best epoch by validation
mIoU) through ``python -m kseg.train``, into ``bench/results/zoo/<model>-<backbone>``
(a run that was stopped resumes). One JSON line per pair, then the list,
which also goes to ``bench/results/zoo.json``. The budget is short on purpose:
it ranks how fast each architecture learns on a laptop CPU, not how far it gets.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import REPO, _keras_home, _machine  # noqa: E402

DEFAULT_PAIRS = "deeplabv3plus:mobilenetv2,unet:mobilenetv2,pspnet:mobilenetv2,fcn8s:mobilenetv2,segnet:vgg16"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", default=DEFAULT_PAIRS)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--size", default="128x160")
    p.add_argument("--mask", default="regions")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "zoo"))
    args = p.parse_args(argv)
    env = _keras_home(dict(os.environ))
    rows = []
    for pair in args.pairs.split(","):
        model, backbone = pair.split(":")
        out = Path(args.out) / f"{model}-{backbone}"
        cmd = [sys.executable, "-m", "kseg.train", "--mask", args.mask, "--fold", "0", "--model", model,
               "--backbone", backbone, "--encoder-weights", "imagenet", "--size", args.size,
               "--epochs", str(args.epochs), "--batch-size", "8", "--optimizer", "adamw", "--weight-decay", "1e-4",
               "--lr", "1e-3", "--schedule", "cosine", "--warmup", "0.5", "--bn-momentum", "0.9",
               "--augment", "flip", "--monitor", "val_miou", "--no-export", "--verbose", "2", "--out", str(out)]
        print("bench: " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
        t0 = time.time()
        res = subprocess.run(cmd, cwd=REPO, env=env, stdout=sys.stderr)  # stdout stays JSON
        if res.returncode != 0:
            row = {"model": model, "backbone": backbone, "error": f"kseg.train exited with {res.returncode}"}
        else:
            m = json.loads((out / "metrics.json").read_text())
            row = {"model": model, "backbone": backbone, "epochs": args.epochs, "size": args.size,
                   "val_miou": round(m["miou"], 4), "val_pixel_accuracy": round(m["pixel_accuracy"], 4),
                   "val_mean_accuracy": round(m["mean_accuracy"], 4), "wall_seconds": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    report = {"bench": "zoo", "mask": args.mask, "fold": 0, "results": rows, "machine": _machine()}
    text = json.dumps(report, indent=1)
    print(text)
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "zoo.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
