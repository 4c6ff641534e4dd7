"""Speed: kseg vs segmentation_models 1.0.1, side by side in one run, JSON out.

    .venv/bin/python bench/speed.py [--quick] [--threads 2] [--out bench/results/speed.json]

What it measures (every figure in a fresh worker process, kseg and the peer
alternating, the same shapes, data and thread count):

- training throughput (images/s) and peak RSS: kseg's U-Net resnet34 (as
  ``kseg.train`` compiles it: Adam, ignore-aware cross-entropy, pixel accuracy
  and mIoU metrics) against ``sm.Unet('resnet34', classes=3,
  encoder_weights=None)`` (Adam, categorical cross-entropy, ``iou_score``) at
  224x224, batch 16, on the same synthetic batch held in memory (step time
  only); kseg once more fed by its real tf.data pipeline on iccv09 images
  (resize, cache, one-hot, prefetch), to show the data never starves the step;
- inference throughput: kseg's exported SavedModel (``serving_default``, uint8
  in, probabilities and class map out) against the peer's ``model.predict``,
  each at its best batch size;
- label loading, cold and warm, against np.loadtxt per file (``bench/labels.py``);
- achieved training FLOP/s (the model's convolution FLOPs counted once from
  its layers, a training step taken as 3x the forward pass) over this
  machine's float32 GEMM rate, measured in the same run.
- with ``--ab NAME`` (repeatable), kseg's training once more with one of its
  optimisations turned off, alternating with the rest: ``keras-bn`` (Keras's
  unfused batch norm, ``KSEG_FUSED_BN=0``; ``--keras-bn`` is short for it),
  ``explicit-upsample`` (U-Net's decoder as UpSampling2D -> Concatenate ->
  Conv2D, ``KSEG_FUSED_UPSAMPLE=0``), ``eigen`` (TensorFlow's Eigen kernels
  instead of oneDNN, ``TF_ENABLE_ONEDNN_OPTS=0``), ``keras-adam`` (Keras's Adam
  step instead of kseg.optimizers' fused one, ``KSEG_FUSED_ADAM=0``).

TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI / BF16
or AMX; ``import kseg`` turns it on everywhere on x86. So that the peer is
measured at its fastest too, every peer row runs twice, with TensorFlow's
default and with ``TF_ENABLE_ONEDNN_OPTS=1``, and the peer's figure is the
best of both (both are in the JSON).

The peer is a measurement peer, never a kseg dependency: the first run
installs it into ``bench/.venv-sm`` (segmentation-models 1.0.1, the
TensorFlow version of kseg's own venv, tf-keras) and reuses it after. It runs
through tf-keras (``TF_USE_LEGACY_KERAS=1``, ``SM_FRAMEWORK=tf.keras``), its
fastest setting, without XLA (XLA makes it slower, or fails).

The rows of kseg under Keras's ``mixed_bfloat16`` policy run by default only
where the CPU computes bfloat16 natively (``avx512_bf16`` or AMX in
/proc/cpuinfo; ``--bf16 on`` / ``off`` to choose): elsewhere bfloat16 is
emulated and a training worker takes many times longer than float32's.

Throughputs are the best of the repeats (``--repeats``) for each side; all
repeats are in the JSON too. ``--quick`` takes fewer steps (a smoke test,
noisy figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / "bench" / ".venv-sm"
PEER_PKGS = ["segmentation-models==1.0.1"]
SIZE, BATCH, CLASSES = 224, 16, 3
# kseg's optimisations, each with the environment that turns it off (--ab)
AB = {"keras-bn": {"KSEG_FUSED_BN": "0"}, "explicit-upsample": {"KSEG_FUSED_UPSAMPLE": "0"},
      "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "keras-adam": {"KSEG_FUSED_ADAM": "0"}}
PEER_ONEDNN = {"TF_ENABLE_ONEDNN_OPTS": "1"}
PEER_SETTINGS = {"peer": "tensorflow default kernels", "peer_onednn": "TF_ENABLE_ONEDNN_OPTS=1"}


# --------------------------------------------------------------------------- worker side (kseg's or the peer's venv)

def import_kseg_first() -> None:
    """Import kseg from this checkout before TensorFlow, with the TF_ENABLE_ONEDNN_OPTS default a kseg command
    sets (kseg.startup: 1 on x86 unless the row sets it)."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    sys.path.insert(0, str(ROOT))
    import kseg  # noqa: F401


def _setup(threads: int, inter_op: int | None = None):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op or threads)
    return tf


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _synthetic(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, (BATCH, SIZE, SIZE))
    y = np.eye(CLASSES, dtype=np.float32)[labels]
    return x, y


def _build(side: str, tf, precision: str = "float32"):
    """The model and its compile arguments, as each library's users train it."""
    if side == "peer":
        import segmentation_models as sm

        model = sm.Unet("resnet34", input_shape=(SIZE, SIZE, 3), classes=CLASSES, activation="softmax",
                        encoder_weights=None)
        return model, dict(optimizer=tf.keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                           metrics=[sm.metrics.iou_score])
    import keras

    from kseg import losses, metrics, models, optimizers

    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)  # kseg's head computes in float32 (DESIGN.md)
    model = models.build("unet", backbone="resnet34", num_classes=CLASSES, input_shape=(SIZE, SIZE, 3))
    return model, dict(optimizer=optimizers.Adam(1e-3), loss=losses.get("ce"),
                       metrics=[metrics.PixelAccuracy(CLASSES), metrics.MeanIoU(CLASSES)])


def _gemm_gflops(tf, rounds: int = 3, n: int = 2048) -> float:
    """Best float32 GEMM rate (GFLOP/s) of ``rounds`` x 5 products of two n x n matrices."""
    m1 = tf.random.normal((n, n), seed=1)
    m2 = tf.random.normal((n, n), seed=2)
    tf.linalg.matmul(m1, m2).numpy()
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(5):
            tf.linalg.matmul(m1, m2).numpy()
        best = max(best, 5 * 2 * n ** 3 / (time.perf_counter() - t))
    return best / 1e9


def worker_train(a) -> dict:
    tf = _setup(a.threads, a.inter_op)
    gemm_before = _gemm_gflops(tf)  # this process's GEMM rate under the same load as its training steps
    keras = tf.keras if a.side == "peer" else __import__("keras")
    keras.utils.set_random_seed(0)
    model, compile_args = _build(a.side, tf, a.precision)
    if a.side == "kseg":
        compile_args["jit_compile"] = {"on": True, "off": False, "auto": "auto"}[a.jit]
    model.compile(**compile_args)
    if a.data == "pipeline":
        from kseg.data import iccv09_datasets

        ds, _, info = iccv09_datasets(None, mask="surfaces", size=(SIZE, SIZE), batch_size=BATCH, quiet=True)
    else:
        x, y = _synthetic()
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()

    times = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float((logs or {}).get("loss", 0.0))  # the step's values exist: it has finished
            times.append(time.perf_counter())

    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=a.warmup + a.steps, epochs=1, verbose=0, callbacks=[Clock()])
    first_step = times[0] - t0
    step = (times[-1] - times[a.warmup - 1]) / a.steps
    rss = _peak_rss_mb()
    return {"images_per_s": BATCH / step, "step_s": step, "first_step_s": first_step,
            "peak_rss_mb": rss, "params": int(model.count_params()),
            "gemm_gflops": max(gemm_before, _gemm_gflops(tf))}


def worker_export(a) -> dict:
    _setup(a.threads)
    import keras

    from kseg.export import export_saved_model

    keras.utils.set_random_seed(0)
    model, _ = _build("kseg", None, a.precision)
    t = time.perf_counter()
    export_saved_model(model, a.path, tflite=False)
    return {"export_s": time.perf_counter() - t}


def worker_infer(a) -> dict:
    tf = _setup(a.threads)
    import numpy as np

    x = np.random.default_rng(1).integers(0, 256, (max(a.batches), SIZE, SIZE, 3)).astype(np.uint8)
    if a.side == "peer":
        tf.keras.utils.set_random_seed(0)
        model, _ = _build("peer", tf)
        xf = x.astype(np.float32)

        def run(b):
            model.predict(xf[:b], batch_size=b, verbose=0)
    else:
        serve = tf.saved_model.load(a.path).signatures["serving_default"]

        def run(b):
            serve(images=tf.constant(x[:b]))["class_map"].numpy()

    return time_batches(run, a.batches, a.images)


def time_batches(run, batches, images: int) -> dict:
    """Images/s of ``run(b)`` at each batch size ``b`` (a first call traces and warms up, then about ``images``
    images are timed), the best of them and the process's peak RSS."""
    result = {}
    for b in batches:
        run(b)  # trace / warm up
        n = max(1, images // b)
        t = time.perf_counter()
        for _ in range(n):
            run(b)
        result[str(b)] = n * b / (time.perf_counter() - t)
    best = max(result, key=result.get)
    return {"images_per_s": result[best], "best_batch": int(best), "by_batch": result,
            "peak_rss_mb": _peak_rss_mb()}


def worker_gemm(a) -> dict:
    return {"gflops": _gemm_gflops(_setup(a.threads), a.rounds), "n": 2048}


def worker_flops(a) -> dict:
    """Forward FLOPs per image of kseg's U-Net resnet34: 2 x multiply-adds of every convolution."""
    _setup(a.threads)
    import keras

    model, _ = _build("kseg", None)
    conv = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            conv += 2 * h * w * kh * kw * cin * cout
    return {"forward_gflop_per_image": conv / 1e9, "params": int(model.count_params())}


WORKERS = {"train": worker_train, "export": worker_export, "infer": worker_infer, "gemm": worker_gemm,
           "flops": worker_flops}


def worker_main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("task", choices=WORKERS)
    p.add_argument("--side", default="kseg", choices=("kseg", "peer"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--inter-op", type=int, default=None,
                   help="inter-op threads of the training worker (default --threads)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--jit", default="off", choices=("on", "off", "auto"))
    p.add_argument("--data", default="synthetic", choices=("synthetic", "pipeline"))
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    p.add_argument("--path", default=None)
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    if a.side == "kseg":
        import_kseg_first()
    out = WORKERS[a.task](a)
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------- driver

def _tf_version(python) -> str:
    return subprocess.run([str(python), "-c", "import tensorflow as tf; print(tf.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def ensure_peer(log) -> Path:
    """bench/.venv-sm with segmentation-models 1.0.1 on kseg's TensorFlow version (made once)."""
    py = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".kseg-bench-ok"
    tf_version = _tf_version(sys.executable)
    if stamp.exists() and stamp.read_text().strip() == tf_version and py.exists():
        return py
    log(f"installing the peer into {PEER_VENV} (segmentation-models 1.0.1, tensorflow {tf_version}, tf-keras) ...")
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    major_minor = ".".join(tf_version.split(".")[:2])
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"tensorflow=={tf_version}",
                    f"tf-keras~={major_minor}.0", *PEER_PKGS], check=True)
    env = _peer_env()
    subprocess.run([str(py), "-c", "import segmentation_models"], env=env, check=True, capture_output=True)
    stamp.write_text(tf_version)
    return py


def _peer_env():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", SM_FRAMEWORK="tf.keras")
    env.pop("PYTHONPATH", None)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # TensorFlow's own default, unless a row sets it
    return env


def _quiet_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")


def run_worker(python, task, args, log, peer=False, env_extra=None, script=__file__) -> dict:
    """``script --worker task args`` in a fresh process (the peer's environment with ``peer``); its RESULT JSON."""
    env = _peer_env() if peer else dict(os.environ)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", **(env_extra or {}))
    cmd = [str(python), str(Path(script).resolve()), "--worker", task, *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {task} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    log(f"  {task:6s} {'peer' if peer else 'kseg'} {' '.join(args)}{' ' + str(env_extra) if env_extra else ''}: "
        f"{ {k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items() if k != 'by_batch'} } "
        f"({time.perf_counter() - t:.0f}s)")
    return out


def native_bf16(cpuinfo: str | None = None) -> bool:
    """:func:`kseg.precision.native_bf16`, imported when called: the peer's workers load this file and never
    import kseg."""
    import_kseg_first()
    from kseg.precision import native_bf16 as native

    return native(cpuinfo)


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": model or platform.processor(), "cpus": os.cpu_count(), "memory_gib": mem,
            "python": platform.python_version(), "load_average_1min_at_start": load}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few steps: a smoke test, noisy figures")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra- and inter-op threads, both sides")
    p.add_argument("--repeats", type=int, default=None, help="alternating repeats per side (default 2, quick 1)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 15, quick 4)")
    p.add_argument("--jit", default="off", choices=("on", "off", "auto"), help="kseg's jit_compile")
    p.add_argument("--no-labels", action="store_true", help="skip the label-loading bench")
    p.add_argument("--bf16", default="auto", choices=("auto", "on", "off"),
                   help="the rows of kseg under Keras's mixed_bfloat16 policy (not kseg's default); auto: only "
                        "where /proc/cpuinfo lists avx512_bf16 or AMX, since without them bfloat16 is emulated "
                        "and a worker takes many times longer than float32")
    p.add_argument("--no-bf16", dest="bf16", action="store_const", const="off", help="short for --bf16 off")
    p.add_argument("--ab", action="append", default=[], choices=sorted(AB),
                   help="also time kseg's training with this optimisation off, alternating (repeatable)")
    p.add_argument("--keras-bn", action="store_true", help="short for --ab keras-bn")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"), help="also write the JSON here")
    args = p.parse_args(argv)
    bf16_mode, bf16_native = args.bf16, native_bf16()
    args.bf16 = bf16_mode == "on" or (bf16_mode == "auto" and bf16_native)
    quick = args.quick
    if args.keras_bn and "keras-bn" not in args.ab:
        args.ab.append("keras-bn")
    repeats = args.repeats or (1 if quick else 2)
    steps = args.steps or (4 if quick else 15)
    warmup = 2 if quick else 3
    t_start = time.time()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import importlib.util

    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
        sys.exit("bench/speed.py: run it with kseg's venv, e.g. .venv/bin/python bench/speed.py")
    peer_py = ensure_peer(log)
    th = ["--threads", str(args.threads)]
    me = sys.executable
    res: dict = {"bench": "speed", "quick": quick, "threads": args.threads, "size": [SIZE, SIZE], "batch": BATCH,
                 "classes": CLASSES, "machine": machine(), "versions": {},
                 "bf16_rows": f"{'run' if args.bf16 else 'skipped'} (--bf16 {bf16_mode}; native bfloat16 on this "
                              f"CPU: {bf16_native})"}
    res["versions"]["tensorflow"] = _tf_version(me)
    res["versions"]["keras_kseg"] = subprocess.run([me, "-c", "import keras; print(keras.__version__)"],
                                                   capture_output=True, text=True).stdout.strip()
    res["versions"]["peer"] = "segmentation-models 1.0.1 on tf-keras " + subprocess.run(
        [str(peer_py), "-c", "import tf_keras; print(tf_keras.__version__)"], capture_output=True, text=True,
        env=_peer_env()).stdout.strip()

    log("GEMM and FLOPs")
    gemm = [run_worker(me, "gemm", th, log)]
    flops = run_worker(me, "flops", th, log)

    log(f"training: {repeats} alternating repeats, {steps} steps after {warmup} warm-up")
    train = {"kseg": [], "peer": [], "peer_onednn": [], "kseg_pipeline": [], "kseg_bf16": [],
             **{f"kseg_{name}": [] for name in args.ab}}
    targs = [*th, "--steps", str(steps), "--warmup", str(warmup)]
    for _ in range(repeats):
        train["kseg"].append(run_worker(me, "train", [*targs, "--jit", args.jit], log))
        train["peer"].append(run_worker(peer_py, "train", [*targs, "--side", "peer"], log, peer=True))
        train["peer_onednn"].append(run_worker(peer_py, "train", [*targs, "--side", "peer"], log, peer=True,
                                               env_extra=PEER_ONEDNN))
        for name in args.ab:
            train[f"kseg_{name}"].append(run_worker(me, "train", [*targs, "--jit", args.jit], log,
                                                    env_extra=AB[name]))
        if args.bf16:
            train["kseg_bf16"].append(run_worker(me, "train", [*targs, "--precision", "mixed_bfloat16"], log))
    try:
        train["kseg_pipeline"].append(
            run_worker(me, "train", [*targs, "--jit", args.jit, "--data", "pipeline", "--warmup",
                                     str(warmup + 2)], log))
    except RuntimeError as err:  # no iccv09 data here: the step-only figures still stand
        log(f"  (no pipeline run: {str(err).splitlines()[-1]})")

    log("inference")
    tmp = Path(tempfile.mkdtemp(prefix="kseg-speed-"))
    try:
        sm_dir = tmp / "saved_model"
        export = run_worker(me, "export", [*th, "--path", str(sm_dir)], log)
        if args.bf16:
            run_worker(me, "export", [*th, "--path", str(tmp / "saved_model_bf16"), "--precision", "mixed_bfloat16"],
                       log)
        iargs = [*th, "--batches", "8,16,32", "--images", "32" if quick else "64"]
        infer = {"kseg": [], "peer": [], "peer_onednn": [], "kseg_bf16": []}
        for _ in range(repeats):
            infer["kseg"].append(run_worker(me, "infer", [*iargs, "--path", str(sm_dir)], log))
            infer["peer"].append(run_worker(peer_py, "infer", [*iargs, "--side", "peer"], log, peer=True))
            infer["peer_onednn"].append(run_worker(peer_py, "infer", [*iargs, "--side", "peer"], log, peer=True,
                                                   env_extra=PEER_ONEDNN))
            if args.bf16:
                infer["kseg_bf16"].append(run_worker(me, "infer", [*iargs, "--path", str(tmp / "saved_model_bf16")],
                                                     log))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gemm.append(run_worker(me, "gemm", th, log))

    labels = None
    if not args.no_labels:
        log("label loading (bench/labels.py)")
        proc = subprocess.run([me, str(ROOT / "bench" / "labels.py"), "--repeat", "1" if quick else "3"],
                              capture_output=True, text=True, cwd=str(ROOT), env=_quiet_env())
        if proc.returncode == 0:
            labels = json.loads(proc.stdout)
        else:
            log(f"  (label bench failed: {proc.stderr.strip().splitlines()[-1:]})")

    def best(rows, key="images_per_s"):
        return max(r[key] for r in rows) if rows else None

    # the peer at its fastest: the better of TensorFlow's default kernels and oneDNN, per figure
    peer_train_setting = max(("peer", "peer_onednn"), key=lambda k: best(train[k]))
    peer_infer_setting = max(("peer", "peer_onednn"), key=lambda k: best(infer[k]))
    peer_train, peer_infer = train[peer_train_setting], infer[peer_infer_setting]
    k_train, p_train = best(train["kseg"]), best(peer_train)
    k_rss, p_rss = max(r["peak_rss_mb"] for r in train["kseg"]), max(r["peak_rss_mb"] for r in peer_train)
    k_inf, p_inf = best(infer["kseg"]), best(peer_infer)
    gemm_gflops = max(g["gflops"] for g in gemm)
    train_gflop = 3 * flops["forward_gflop_per_image"]

    def fraction(rows):  # the best worker's training FLOP/s over the GEMM rate measured in that worker
        r = max(rows, key=lambda r: r["images_per_s"])
        return train_gflop * r["images_per_s"] / r["gemm_gflops"]
    pipe = best(train["kseg_pipeline"])
    summary = {
        "train_images_per_s": {"kseg": k_train, "peer": p_train, "ratio": k_train / p_train, "target": 1.5,
                               "peer_setting": PEER_SETTINGS[peer_train_setting],
                               "peer_by_setting": {PEER_SETTINGS[k]: best(train[k]) for k in PEER_SETTINGS}},
        "train_images_per_s_kseg_with_pipeline": pipe,
        "pipeline_over_synthetic": pipe / k_train if pipe else None,
        "train_peak_rss_mb": {"kseg": k_rss, "peer": p_rss, "ratio": k_rss / p_rss, "target": "<= 1",
                              "peer_setting": PEER_SETTINGS[peer_train_setting],
                              "peer_by_setting": {PEER_SETTINGS[k]: max(r["peak_rss_mb"] for r in train[k])
                                                  for k in PEER_SETTINGS}},
        "infer_images_per_s": {"kseg_savedmodel": k_inf, "peer_predict": p_inf, "ratio": k_inf / p_inf,
                               "kseg_best_batch": max(infer["kseg"], key=lambda r: r["images_per_s"])["best_batch"],
                               "peer_best_batch": max(peer_infer, key=lambda r: r["images_per_s"])["best_batch"],
                               "target": 1.5, "peer_setting": PEER_SETTINGS[peer_infer_setting],
                               "peer_by_setting": {PEER_SETTINGS[k]: best(infer[k]) for k in PEER_SETTINGS}},
        "train_flops": {"forward_gflop_per_image": flops["forward_gflop_per_image"],
                        "train_gflop_per_image": train_gflop, "gemm_gflops_best_in_run": gemm_gflops,
                        "kseg_gflops": train_gflop * k_train, "kseg_fraction_of_gemm": fraction(train["kseg"]),
                        "peer_fraction_of_gemm": fraction(peer_train),
                        "kseg_bf16_fraction_of_gemm": fraction(train["kseg_bf16"]) if train["kseg_bf16"] else None,
                        "target": 0.5, "count": "2 x multiply-adds of every Conv2D, once, as the peer's graph has "
                                                "them (kseg's UpsampleConv2D does fewer: those count as the "
                                                "explicit convolution); training = 3 x forward; each fraction "
                                                "uses the float32 GEMM rate measured in the same worker process, "
                                                "before and after its steps (best of the two)"},
    }
    if train["kseg_bf16"]:
        kb, ib = best(train["kseg_bf16"]), best(infer["kseg_bf16"])
        summary["kseg_mixed_bfloat16_not_default"] = {
            "train_images_per_s": kb, "train_ratio_vs_peer": kb / p_train,
            "train_peak_rss_mb": max(r["peak_rss_mb"] for r in train["kseg_bf16"]),
            "infer_images_per_s": ib, "infer_ratio_vs_peer": ib / p_inf,
            "note": "Keras mixed_bfloat16 policy; the peer stays float32 (its fastest setting in the issue); "
                    "accuracy not yet validated, TFLite cannot convert a bfloat16 SavedModel"}
    if args.ab:
        summary["kseg_optimisations_ab"] = {
            name: {"off": AB[name], "train_images_per_s_on": k_train,
                   "train_images_per_s_off": best(train[f"kseg_{name}"]),
                   "ratio_on_over_off": k_train / best(train[f"kseg_{name}"]), "peak_rss_mb_on": k_rss,
                   "peak_rss_mb_off": max(r["peak_rss_mb"] for r in train[f"kseg_{name}"])}
            for name in args.ab}
    if labels:
        summary["label_loading_speedup_vs_np_loadtxt"] = {**labels["speedup_vs_tutorial"],
                                                          "target": {"cold": 10, "warm": 100}}
    met = {"train_1.5x": summary["train_images_per_s"]["ratio"] >= 1.5,
           "infer_1.5x": summary["infer_images_per_s"]["ratio"] >= 1.5,
           "rss_le_peer": k_rss <= p_rss,
           "rss_le_peer_every_setting": k_rss <= min(summary["train_peak_rss_mb"]["peer_by_setting"].values()),
           "flops_50pct_of_gemm": summary["train_flops"]["kseg_fraction_of_gemm"] >= 0.5}
    if labels:
        met["labels_cold_10x"] = labels["speedup_vs_tutorial"]["cold"] >= 10
        met["labels_warm_100x"] = labels["speedup_vs_tutorial"]["warm"] >= 100
    res.update(summary=_round(summary), targets_met=met,
               raw=_round({"train": train, "infer": infer, "export": export, "gemm": gemm, "flops": flops,
                           "labels": labels}),
               seconds=round(time.time() - t_start))
    res["machine"]["load_average_1min_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def _round(obj):
    if isinstance(obj, float):
        return round(obj, 3)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


if __name__ == "__main__":
    sys.exit(main())
