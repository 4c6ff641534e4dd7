"""Benchmark the model zoo: parameters and CPU inference speed at 224x224, printed as JSON.

    python bench/models.py [--size 224] [--batch 1] [--runs 5] [--pairs unet:resnet34,fcn8s:vgg16]

For each (architecture, backbone) pair: build with 3 classes at size x size,
warm up once (the traced function is reused), then time ``--runs`` calls of
the compiled predict step on a random batch of raw RGB and report the median
images per second. One JSON object per line, then a summary list.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_PAIRS = [("unet", "resnet34"), ("unet", "plain"), ("unet", "mobilenetv2"), ("fcn32s", "vgg16"),
                 ("fcn16s", "vgg16"), ("fcn8s", "vgg16"), ("pspnet", "resnet50"), ("pspnet", "mobilenetv2"),
                 ("segnet", "vgg16"), ("deeplabv3plus", "resnet50"), ("deeplabv3plus", "mobilenetv2"),
                 ("deeplabv3plus", "efficientnetb0"), ("unet", "resnet18"), ("unet", "efficientnetb0")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--pairs", default=None, help="comma-separated arch:backbone (default: a representative set)")
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from kseg import models

    pairs = DEFAULT_PAIRS if not args.pairs else [tuple(s.split(":")) for s in args.pairs.split(",")]
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    results = []
    for arch, backbone in pairs:
        model = models.build(arch, backbone=backbone, num_classes=3, input_shape=(args.size, args.size, 3))
        step = tf.function(lambda t, m=model: m(t, training=False))
        step(x)  # trace and warm up
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            step(x).numpy()
            times.append(time.perf_counter() - t0)
        row = {"model": arch, "backbone": backbone, "params": int(model.count_params()),
               "images_per_s": round(args.batch / statistics.median(times), 2), "size": args.size,
               "batch": args.batch, "runs": args.runs}
        print(json.dumps(row), flush=True)
        results.append(row)
        del model, step
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(),
                      "tensorflow": tf.__version__, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
