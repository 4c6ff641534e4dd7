"""Deployment runtimes: inference speed and peak RSS of the tutorial's model in each, int8's mIoU change; JSON out.

    .venv/bin/python bench/runtimes.py [--quick] [--threads 2] [--model runs/x/best.keras] [--data iccv09Data]
                                       [--out bench/results/runtimes.json]

The model is the tutorial's: U-Net resnet34, 3 classes, 224x224 input (``--model``: a trained ``.keras`` file
of it; default: random weights, which is enough for speed). One worker process exports it
(``kseg.serving.export_model``, batch norms folded) as a SavedModel, ONNX, OpenVINO IR and LiteRT file, and as
int8 OpenVINO (NNCF) and int8 LiteRT files calibrated on ``--calibration-count`` training images of ``--data``
(the images outside run.json's validation ids when ``--model`` has a run.json, else random ones). Then, each in
a fresh process, alternating, ``--repeats`` times:

- ``saved_model``: kseg's SavedModel ``serving_default`` in TensorFlow (the row bench/speed.py measures);
- ``onnx``, ``openvino``, ``litert``, ``openvino_int8``, ``litert_int8``: the runtime's own Python package
  alone (onnxruntime, openvino, ai_edge_litert; no TensorFlow in the process, as a deployed service runs it),
  set up as :mod:`kseg.runtimes` does;
- ``peer``: segmentation_models 1.0.1's ``sm.Unet('resnet34', classes=3)`` ``model.predict`` in its own venv
  (tf-keras, ``TF_USE_LEGACY_KERAS=1 SM_FRAMEWORK=tf.keras``), with TensorFlow's default kernels and with
  oneDNN on (``TF_ENABLE_ONEDNN_OPTS=1``); its figure is the better of the two.

Every row takes uint8 (kseg) or float32 (peer) 224x224 images at batch sizes 1 and 16 (``--quick``: 1 and 4),
``--threads`` CPU threads; its figure is its best batch size, best repeat. ``peak_rss_mb`` is the worker's
peak resident memory (model loading and inference). With ``--model`` and ``--data``, ``miou`` scores the
float32 and int8 exports on the validation split with ``kseg evaluate`` at native resolution (the exports take
each image at its own size), so int8's change in mIoU points is measured. ``--quick``: fewer images and
repeats, 16 calibration images (a smoke test; noisy figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (bench/speed.py: workers, the peer's venv, the machine)

ROOT = speed.ROOT
SIZE, CLASSES = speed.SIZE, speed.CLASSES
PEER_PYTHON = Path("/work/venv-sm/bin/python")  # a ready peer venv, else bench/.venv-sm is made (speed.ensure_peer)
FILES = {"saved_model": "saved_model", "onnx": "model.onnx", "openvino": "model.xml", "litert": "model.tflite",
         "openvino_int8": "int8.xml", "litert_int8": "int8.tflite"}


# --------------------------------------------------------------------------- workers

def _images(n: int):
    import numpy as np

    return np.random.default_rng(1).integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)


def _calibration(a):
    """Training images of ``a.data``: those outside run.json's ``val_ids`` (random ones without it)."""
    import numpy as np

    from kseg.inference import read_image

    images = sorted((Path(a.data) / "images").glob("*.jpg"))
    run = Path(a.model).parent / "run.json" if a.model else None
    val = set(json.loads(run.read_text()).get("val_ids") or []) if run and run.is_file() else set()
    train = [p for p in images if p.stem not in val]
    pick = np.random.default_rng(0).permutation(len(train))[:a.calibration_count]
    return [read_image(train[i])[None] for i in sorted(pick)], bool(val)


def worker_export(a) -> dict:
    speed._setup(a.threads)
    import keras

    from kseg.saving import load_keras_model
    from kseg.serving import export_model

    if a.model:
        model = load_keras_model(a.model)
    else:
        keras.utils.set_random_seed(0)
        model, _ = speed._build("kseg", None)
    calibration, from_split = _calibration(a)
    out, result = Path(a.path), {"calibration_images": len(calibration), "calibration_from_train_split": from_split}
    for name, file in FILES.items():
        fmt, int8 = name.replace("_int8", ""), name.endswith("_int8")
        t = time.perf_counter()
        path = export_model(model, out / file, fmt, tflite=False, int8=int8, calibration=calibration if int8 else None)
        result[f"{name}_export_s"] = time.perf_counter() - t
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else \
            path.stat().st_size + (path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
        result[f"{name}_mb"] = size / 2 ** 20
    if a.model and (Path(a.model).parent / "run.json").is_file():  # kseg evaluate reads the run's split beside
        shutil.copy(Path(a.model).parent / "run.json", out / "run.json")
        shutil.copy(Path(a.model).parent / "run.json", out / "saved_model" / "run.json")
    return result


def _runner(name: str, path: str, threads: int):
    """``run(uint8 batch)`` of one export in its runtime's package alone (as kseg.runtimes sets it up)."""
    if name == "saved_model":
        tf = speed._setup(threads)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        return lambda x: serve(images=tf.constant(x))["class_map"].numpy()
    if name == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return lambda x: sess.run(["class_map"], {"images": x})[0]
    if name.startswith("openvino"):
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path, num_threads=threads).get_signature_runner("serving_default")
    return lambda x: runner(images=x)["class_map"]


def worker_infer(a) -> dict:
    x = _images(max(a.batches))
    if a.side == "peer":
        import numpy as np

        tf = speed._setup(a.threads)
        tf.keras.utils.set_random_seed(0)
        model, _ = speed._build("peer", tf)
        xf = x.astype(np.float32)

        def run(b):
            model.predict(xf[:b], batch_size=b, verbose=0)
    else:
        if a.name == "saved_model":
            speed.import_kseg_first()
        fn = _runner(a.name, a.path, a.threads)

        def run(b):
            fn(x[:b])

    return speed.time_batches(run, a.batches, a.images)


def worker_miou(a) -> dict:
    speed.import_kseg_first()
    speed._setup(a.threads)
    from kseg import evaluate

    with tempfile.TemporaryDirectory() as out:
        args = ["--model", a.path, "--data", a.data, "--mask", "surfaces", "--native", "--out", out]
        rep = evaluate.run(evaluate.parse_args(args))
    return {"miou": rep["miou"], "pixel_accuracy": rep.get("pixel_accuracy"), "images": rep.get("images"),
            "split_from": rep.get("split_from"), "native": rep.get("native")}


WORKERS = {"export": worker_export, "infer": worker_infer, "miou": worker_miou}


def worker_main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("task", choices=WORKERS)
    p.add_argument("--side", default="kseg", choices=("kseg", "peer"))
    p.add_argument("--name", default=None)
    p.add_argument("--path", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration-count", type=int, default=100)
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    p.add_argument("--images", type=int, default=32)
    a = p.parse_args(argv)
    if a.task == "export" or a.task == "miou":
        speed.import_kseg_first()
    print("RESULT " + json.dumps(WORKERS[a.task](a)), flush=True)


# --------------------------------------------------------------------------- driver

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke test: fewer images, repeats and calibration images")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads of every row "
                                                                             "(default: all cores)")
    p.add_argument("--model", default=None, help="a trained .keras U-Net resnet34 (3 classes, 224x224); default: "
                                                 "random weights, and no mIoU")
    p.add_argument("--data", default=str(ROOT / "data" / "iccv09Data"),
                   help="the iccv09Data folder: calibration images, and the validation split for the mIoU "
                        "(default: data/iccv09Data)")
    p.add_argument("--calibration-count", type=int, default=None, help="int8 calibration images (default 100, "
                                                                       "--quick 16)")
    p.add_argument("--repeats", type=int, default=None, help="inference repeats per row (default 2, --quick 1)")
    p.add_argument("--peer-python", default=None, help="the peer venv's python (default: /work/venv-sm's if it "
                                                       "exists, else bench/.venv-sm, made on first use)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if not (Path(args.data) / "images").is_dir():
        sys.exit(f"bench/runtimes.py: {args.data}: no iccv09Data folder (give --data)")
    t_start = time.time()

    def log(msg):
        print(f"[{time.time() - t_start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    me = sys.executable
    peer_py = Path(args.peer_python) if args.peer_python else (PEER_PYTHON if PEER_PYTHON.exists()
                                                                else speed.ensure_peer(log))
    repeats = args.repeats or (1 if args.quick else 2)
    count = args.calibration_count or (16 if args.quick else 100)
    common = ["--threads", str(args.threads)]
    iargs = [*common, "--batches", "1,4" if args.quick else "1,16", "--images", "8" if args.quick else "32"]
    tmp = Path(tempfile.mkdtemp(prefix="kseg-bench-runtimes-"))
    try:
        log(f"exporting to {tmp}")
        export = speed.run_worker(me, "export", [*common, "--path", str(tmp), "--data", args.data,
                                                 "--calibration-count", str(count),
                                                 *(["--model", args.model] if args.model else [])], log,
                                  script=__file__)
        rows = {name: [] for name in (*FILES, "peer", "peer_onednn")}
        for _ in range(repeats):
            for name, file in FILES.items():
                rows[name].append(speed.run_worker(me, "infer", [*iargs, "--name", name, "--path", str(tmp / file)],
                                                   log, script=__file__))
            rows["peer"].append(speed.run_worker(peer_py, "infer", [*iargs, "--side", "peer"], log, peer=True,
                                                 script=__file__))
            rows["peer_onednn"].append(speed.run_worker(peer_py, "infer", [*iargs, "--side", "peer"], log,
                                                        peer=True, env_extra=speed.PEER_ONEDNN, script=__file__))
        miou = {}
        if args.model:
            for name in ("keras", "onnx", "openvino", "openvino_int8", "litert", "litert_int8"):
                target = tmp / FILES[name] if name != "keras" else Path(args.model)
                miou[name] = speed.run_worker(me, "miou", [*common, "--path", str(target), "--data", args.data],
                                              log, script=__file__)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(summarize(args, rows, export, miou, repeats, count, time.time() - t_start), indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


def summarize(args, rows, export, miou, repeats, count, seconds) -> dict:
    def best(rs):
        return max(r["images_per_s"] for r in rs)

    peer_key = max(("peer", "peer_onednn"), key=lambda k: best(rows[k]))
    peer = best(rows[peer_key])
    infer = {name: {"images_per_s": best(rows[name]), "vs_peer": best(rows[name]) / peer,
                    "best_batch": max(rows[name], key=lambda r: r["images_per_s"])["best_batch"],
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in rows[name])} for name in rows}
    f32 = max(("saved_model", "onnx", "openvino", "litert"), key=lambda k: infer[k]["images_per_s"])
    i8 = max(("openvino_int8", "litert_int8"), key=lambda k: infer[k]["images_per_s"])
    summary = {"bench": "runtimes", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "command": "bench/runtimes.py " + " ".join(sys.argv[1:]), "machine": speed.machine(),
               "quick": args.quick, "threads": args.threads, "repeats": repeats, "size": SIZE, "classes": CLASSES,
               "model": args.model or "random weights", "calibration_images": count,
               "peer_setting": speed.PEER_SETTINGS[peer_key], "infer": infer,
               "best_float32": {"runtime": f32, "vs_peer": infer[f32]["vs_peer"], "target": 2.0},
               "best_int8": {"runtime": i8, "vs_peer": infer[i8]["vs_peer"], "target": 3.0},
               "export": export, "seconds": seconds}
    if miou:
        summary["miou"] = miou
        for name in ("openvino", "litert"):
            summary[f"{name}_int8_miou_change_points"] = 100 * (miou[f"{name}_int8"]["miou"] - miou[name]["miou"])
    summary["targets_met"] = {
        "float32_2x": infer[f32]["vs_peer"] >= 2.0, "int8_3x": infer[i8]["vs_peer"] >= 3.0,
        "rss_at_most_peer": infer[f32]["peak_rss_mb"] <= infer[peer_key]["peak_rss_mb"],
        **({"int8_miou_within_0.5": abs(summary[f"{i8.replace('_int8', '')}_int8_miou_change_points"]) <= 0.5}
           if miou else {})}
    return speed._round(summary)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        main()
