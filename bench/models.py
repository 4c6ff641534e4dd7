"""Benchmark the model zoo: parameters, GFLOPs and CPU inference speed, printed as JSON.

    python bench/models.py [--size 224] [--batch 1] [--runs 5] [--pairs unet:resnet34,fcn8s:vgg16]
    python bench/models.py --all --size 256x320      # every architecture x backbone pair (README's table)

For each (architecture, backbone) pair: build with 3 classes at the size (H or HxW; a 240x320 iccv09 photo is
served at 256x320, the nearest multiples of 32), count its forward GFLOPs for one image (TensorFlow's
profiler on the frozen graph: 2 per multiply-add of convolutions, matrix products and einsums, plus the
element-wise ops it knows), warm up once (the traced function is reused), then time ``--runs`` calls of the
compiled predict step on a random batch of raw RGB and report the median images per second. One JSON object
per line, then a summary list. ``--all`` takes every pair ``kseg.models.supported_backbones`` lists.
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


def all_pairs() -> list[tuple[str, str]]:
    from kseg import models

    return [(arch, backbone) for arch in models.list_models() for backbone in models.supported_backbones(arch)]


def gflops(model, shape) -> float:
    """Forward GFLOPs of ``model`` on one (H, W, 3) image: the profiler's float operations on the frozen graph,
    with einsums (which it does not count) as 2 x the product of their index sizes."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, *shape), tf.float32))
    graph = convert_variables_to_constants_v2(fn).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    total = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                          options=opts).total_float_ops
    for op in graph.get_operations():
        if op.type == "Einsum":
            lhs = op.get_attr("equation").decode().split("->")[0].split(",")
            sizes = {}
            for letters, tensor in zip(lhs, op.inputs):
                sizes.update(zip(letters, tensor.shape.as_list()))
            total += 2 * int(np.prod(list(sizes.values()), dtype=np.int64))
    return total / 1e9


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = str(text).lower().partition("x")
    return int(h), int(w or h)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="224", help="H or HxW (default 224)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--pairs", default=None, help="comma-separated arch:backbone (default: a representative set)")
    p.add_argument("--all", action="store_true", help="every architecture x backbone pair")
    p.add_argument("--out", default=None, help="also write the summary JSON here")
    args = p.parse_args(argv)
    h, w = parse_size(args.size)

    import numpy as np
    import tensorflow as tf

    from kseg import models

    pairs = all_pairs() if args.all else DEFAULT_PAIRS if not args.pairs else [
        tuple(s.split(":")) for s in args.pairs.split(",")]
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, h, w, 3)).astype("float32")
    results = []
    for arch, backbone in pairs:
        model = models.build(arch, backbone=backbone, num_classes=3, input_shape=(h, w, 3))
        flops = gflops(model, (h, w, 3))
        step = tf.function(lambda t, m=model: m(t, training=False))
        step(x)  # trace and warm up
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            step(x).numpy()
            times.append(time.perf_counter() - t0)
        row = {"model": arch, "backbone": backbone, "params": int(model.count_params()), "gflops": round(flops, 2),
               "images_per_s": round(args.batch / statistics.median(times), 2), "size": [h, w],
               "batch": args.batch, "runs": args.runs}
        print(json.dumps(row), flush=True)
        results.append(row)
        del model, step
    summary = {"cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(),
               "tensorflow": tf.__version__, "date": time.strftime("%Y-%m-%d"), "results": results}
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
