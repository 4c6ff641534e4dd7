"""Where a training step's time goes: TensorFlow's profiler over kseg's default U-Net step, by op type, as JSON.

    .venv/bin/python bench/profile.py [--steps 3] [--threads 2] [--side kseg|peer] [--precision mixed_bfloat16]

Builds the model ``bench/speed.py`` times (U-Net resnet34, 224x224, batch 16,
3 classes; ``--side peer`` profiles segmentation_models' from ``bench/.venv-sm``:
run this script with that venv's python), warms up two steps, then records
``--steps`` steps with ``tf.profiler.experimental`` and sums the CPU time of
every TensorFlow op event by op type (the trace's ``name:Type``), reading the
profiler's XSpace protocol buffers directly. The JSON lists the top op types
with their share of all op time, and the share that goes to convolutions and
matrix products (the work a float32 GEMM rate bounds).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GEMM_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "_FusedConv2D", "MatMul", "_MklConv2D",
            "_MklNativeConv2D", "_MklNativeConv2DBackpropInput", "_MklNativeConv2DBackpropFilter",
            "_MklNativeFusedConv2D", "_MklFusedConv2D", "BatchMatMulV2", "_MklNativeConv2DWithBias",
            "_MklNativeConv2DBackpropFilterWithBias", "Conv2DBackpropInputV2")


OP_TYPE = re.compile(r"^_?[A-Z][A-Za-z0-9]*$")
WRAPPERS = {"Process", "Run", "ExecutorState", "EagerExecute", "EagerLocalExecute"}


def op_times(logdir: str, by_name: collections.Counter | None = None) -> collections.Counter:
    """Summed duration (ms) of op events per op type from the profiler's ``*.xplane.pb`` files; ``by_name``,
    when given, also gets the sums per op name (``op_name:OpType``, which names the layer)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(path).read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                for ev in line.events:
                    name = plane.event_metadata[ev.metadata_id].name
                    kind = name.rsplit(":", 1)[-1].strip()
                    # op events are "op_name:OpType"; skip executor, function and pipeline wrappers
                    if ":" not in name or kind in WRAPPERS or not OP_TYPE.match(kind) or "Iterator" in name:
                        continue
                    totals[kind] += ev.duration_ps / 1e9
                    if by_name is not None:
                        by_name[name] += ev.duration_ps / 1e9
    return totals


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--side", choices=("kseg", "peer"), default="kseg")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--top-names", type=int, default=0, help="also list the N slowest single ops by name (layer)")
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"),
                   help="kseg's Keras dtype policy (the peer always runs float32)")
    args = p.parse_args(argv)
    if args.side == "peer":
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("SM_FRAMEWORK", "tf.keras")

    import speed
    if args.side == "kseg":
        speed.import_kseg_first()
    tf = speed._setup(args.threads)
    keras = tf.keras if args.side == "peer" else __import__("keras")
    keras.utils.set_random_seed(0)
    model, compile_args = speed._build(args.side, tf, args.precision if args.side == "kseg" else "float32")
    model.compile(**compile_args)
    x, y = speed._synthetic()
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    logdir = tempfile.mkdtemp(prefix="kseg-profile-")
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    wall = time.perf_counter() - t0
    tf.profiler.experimental.stop()
    by_name = collections.Counter()
    totals = op_times(logdir, by_name)
    total = sum(totals.values())
    gemm = sum(v for k, v in totals.items() if k in GEMM_OPS or "Conv2D" in k or "MatMul" in k)
    report = {
        "bench": "profile", "side": args.side, "model": "unet resnet34 224x224 batch 16, 3 classes",
        "precision": args.precision if args.side == "kseg" else "float32",
        "steps": args.steps, "threads": args.threads, "wall_s_per_step": round(wall / args.steps, 3),
        "op_time_s_per_step": round(total / 1e3 / args.steps, 3),
        "conv_and_matmul_share": round(gemm / total, 3) if total else None,
        "top_ops": [{"op": k, "ms_per_step": round(v / args.steps, 1), "share": round(v / total, 3)}
                    for k, v in totals.most_common(args.top)],
    }
    if args.top_names:
        report["top_op_names"] = [{"op": k, "ms_per_step": round(v / args.steps, 1), "share": round(v / total, 3)}
                                  for k, v in by_name.most_common(args.top_names)]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
