"""How fast can the U-Net step be on this CPU? Every convolution timed on its own, summed, as JSON.

    .venv/bin/python bench/bound.py [--side kseg|peer|both] [--threads 2] [--speed bench/results/speed.json]

Takes the model ``bench/speed.py`` measures (U-Net resnet34, 224x224, batch
16, 3 classes; kseg's, or segmentation_models 1.0.1's from ``bench/.venv-sm``
with ``--side peer``) and times each of its convolution layers in isolation,
with the layer's own weights and input shapes: the forward pass, and the
forward pass plus its backward pass (the gradient for the kernel, and for the
input unless the layer reads the model's input directly). Each figure is the
best of ``--reps`` calls after two warm-up calls, and the upstream gradient is a
fixed tensor, so nothing but the layer is timed.

The sums are what the convolutions alone cost per batch: batch norm, ReLU,
adds, pooling, the loss and the optimizer counted as free. ``16 / sum`` is
then an upper bound on images/s for this model with this machine's
convolution kernels (TensorFlow's oneDNN ones, as ``import kseg`` sets). With
``--speed`` (a ``bench/speed.py`` JSON, read if it exists), the output also
says whether 1.5x the peer's measured figure is under that bound.

The per-kind rates show which kernel limits the step: on an AVX2 CPU the
filter gradient (``Conv2DBackpropFilter``) runs at about half the rate of the
forward and input-gradient convolutions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _macs(layer, in_shapes, out_shape) -> float:
    """Multiply-adds of a Conv2D as an explicit convolution over its (concatenated) inputs."""
    kh, kw = layer.kernel_size
    return float(out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3] * kh * kw * sum(s[-1] for s in in_shapes))


def worker(side: str, threads: int, reps: int) -> dict:
    import speed

    if side == "kseg":
        speed.import_kseg_first()
    tf = speed._setup(threads)
    import numpy as np

    keras = tf.keras if side == "peer" else __import__("keras")
    keras.utils.set_random_seed(0)
    model, _ = speed._build(side, tf)
    model_inputs = {id(t) for t in model.inputs}
    rng = np.random.default_rng(0)
    batch = speed.BATCH

    def best(fn):
        fn(), fn()
        out = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t)
        return out

    rows = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        sym = layer.input
        syms = sym if isinstance(sym, (list, tuple)) else [sym]
        shapes = [[batch, *list(s.shape)[1:]] for s in syms]
        xs = [tf.constant(rng.standard_normal(s).astype(np.float32)) for s in shapes]
        arg = xs if isinstance(sym, (list, tuple)) else xs[0]
        out_shape = [batch, *list(layer.output.shape)[1:]]
        dy = tf.constant(rng.standard_normal(out_shape).astype(np.float32))
        wants_dx = not any(id(s) in model_inputs for s in syms)

        @tf.function
        def fwd(arg=arg):
            return layer(arg)[0, 0, 0, 0]

        @tf.function
        def fwd_bwd(arg=arg, dy=dy, wants_dx=wants_dx):
            with tf.GradientTape() as tape:
                if wants_dx:
                    tape.watch(arg)
                y = layer(arg)
            sources = ([arg] if wants_dx else []) + list(layer.trainable_weights)
            grads = tf.nest.flatten(tape.gradient(y, sources, output_gradients=dy))
            return tf.add_n([g[(0,) * len(g.shape)] for g in grads])

        t_f, t_fb = best(fwd), best(fwd_bwd)
        flop = 2 * _macs(layer, shapes, out_shape)
        rows.append({"layer": layer.name, "kind": type(layer).__name__, "input": shapes, "output": out_shape,
                     "gflop_forward": flop / 1e9, "forward_ms": 1e3 * t_f, "backward_ms": 1e3 * (t_fb - t_f),
                     "input_gradient": wants_dx})
    return {"rows": rows, "gemm_gflops": speed._gemm_gflops(tf)}


def summarise(side: str, out: dict, peer: dict | None) -> dict:
    from speed import BATCH as batch

    rows = out["rows"]
    fwd = sum(r["forward_ms"] for r in rows) / 1e3
    bwd = sum(r["backward_ms"] for r in rows) / 1e3
    gf = sum(r["gflop_forward"] for r in rows)
    res = {
        "convolution_layers": len(rows),
        "forward_gflop_per_image": gf / batch,
        "infer_conv_s_per_batch": fwd, "infer_images_per_s_max": batch / fwd,
        "train_conv_s_per_batch": fwd + bwd, "train_images_per_s_max": batch / (fwd + bwd),
        "forward_gflops": gf / fwd, "backward_gflops": 2 * gf / bwd,
        "gemm_gflops": out["gemm_gflops"],
        "flop_count": "2 x multiply-adds of each Conv2D as an explicit convolution over its inputs (as the peer's "
                      "graph has them: kseg's UpsampleConv2D does fewer, so its 'GFLOP/s' are effective rates)",
        "slowest_backward": sorted(({"layer": r["layer"], "backward_ms": round(r["backward_ms"], 1),
                                     "forward_ms": round(r["forward_ms"], 1),
                                     "backward_gflops": round(2 * r["gflop_forward"] / (r["backward_ms"] / 1e3), 1)}
                                    for r in rows), key=lambda r: -r["backward_ms"])[:8],
    }
    if peer and side == "kseg":
        need_train = 1.5 * peer["train_images_per_s"]["peer"]
        need_infer = 1.5 * peer["infer_images_per_s"]["peer_predict"]
        res["against_speed_json"] = {
            "peer_train_images_per_s": peer["train_images_per_s"]["peer"], "train_1.5x_needs": need_train,
            "train_1.5x_possible": res["train_images_per_s_max"] >= need_train,
            "peer_infer_images_per_s": peer["infer_images_per_s"]["peer_predict"], "infer_1.5x_needs": need_infer,
            "infer_1.5x_possible": res["infer_images_per_s_max"] >= need_infer,
        }
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=("kseg", "peer", "both"), default="kseg")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--speed", default=str(HERE / "results" / "speed.json"),
                   help="a bench/speed.py JSON whose peer figures the bound is compared with (if it exists)")
    p.add_argument("--rows", action="store_true", help="include every layer's timings")
    p.add_argument("--worker", choices=("kseg", "peer"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a.threads, a.reps)), flush=True)
        return 0

    import speed

    peer_fig = None
    if Path(a.speed).exists():
        peer_fig = json.loads(Path(a.speed).read_text()).get("summary")
    result = {}
    for side in (("kseg", "peer") if a.side == "both" else (a.side,)):
        python = speed.ensure_peer(lambda m: print(m, file=sys.stderr)) if side == "peer" else sys.executable
        try:  # the peer with oneDNN: its faster kernel setting on CPUs where TensorFlow leaves it off
            out = speed.run_worker(python, side, ["--threads", str(a.threads), "--reps", str(a.reps)],
                                   log=lambda m: None, peer=side == "peer",
                                   env_extra=speed.PEER_ONEDNN if side == "peer" else None, script=__file__)
        except RuntimeError as err:
            print(f"bound: {str(err).strip().splitlines()[0]} {str(err).strip().splitlines()[-1]}", file=sys.stderr)
            return 1
        result[side] = summarise(side, out, peer_fig)
        if a.rows:
            result[side]["rows"] = out["rows"]
    result["speed_json"] = a.speed if peer_fig else None
    print(json.dumps(speed._round(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
