"""Export a trained model: a SavedModel that serves images of any size, and a TFLite file.

``python -m kseg.export --model best.keras --out DIR`` writes ``DIR`` as a
TensorFlow SavedModel whose ``serving_default`` signature takes ``images``, a
uint8 RGB batch (N, H, W, 3) of any H and W, and returns

- ``probabilities``: float32 (N, H, W, C), per-pixel class probabilities at the input's size;
- ``class_map``: int32 (N, H, W), their argmax.

A binary model (one output channel, ``kseg.models.build(..., num_classes=1, activation="sigmoid")``)
returns instead

- ``probabilities``: float32 (N, H, W, 1), the foreground probability at the input's size;
- ``mask``: uint8 (N, H, W), 1 where ``probabilities >= 0.5`` (:data:`BINARY_THRESHOLD`), else 0
  (another threshold: compare ``probabilities`` with it; ``kseg.predict --threshold`` does).

Inside, the batch is resized (bilinear) to the model's own input size if it
has a fixed one, else to the nearest multiples of 32; the model runs (it
carries its own preprocessing); the probabilities are resized back bilinearly.
A model trained under mixed precision is exported as its float32 copy (the same
weights; bfloat16 serving is emulated, and slow, on CPUs without bfloat16
instructions, and TFLite rejects it). Batch norms that follow a convolution are folded into it (same outputs to
float32 rounding, about 5% faster serving; ``--no-fold-bn`` keeps them).
``DIR/model.tflite`` (inside the SavedModel folder, which TensorFlow ignores)
is the same signature converted with ``tf.lite.TFLiteConverter``; skip it with
``--no-tflite``. ``kseg.train`` calls the same :func:`export_saved_model`.

Serving in Python::

    serve = tf.saved_model.load(DIR).signatures["serving_default"]
    out = serve(images=tf.constant(batch_uint8))   # {"probabilities", "class_map"} or {"probabilities", "mask"}
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kseg.errors import KsegError, cli_entry
from kseg.saving import load_keras_model as load_model  # noqa: F401  (kseg.export.load_model, as before)

MULTIPLE = 32
TFLITE_NAME = "model.tflite"
BINARY_THRESHOLD = 0.5


def fixed_input_size(model) -> tuple[int, int] | None:
    """The model's (H, W) if its input has a fixed size, else None."""
    shape = model.inputs[0].shape
    h, w = shape[1], shape[2]
    return (int(h), int(w)) if h and w else None


def nearest_multiple(v, multiple: int = MULTIPLE):
    """The multiple of 32 nearest to ``v`` (at least 32); works on ints and on TF scalars."""
    if isinstance(v, (int, float)):
        return max(multiple, int(round(v / multiple)) * multiple)
    import tensorflow as tf

    v = tf.cast(v, tf.float32)
    return tf.maximum(multiple, tf.cast(tf.round(v / multiple), tf.int32) * multiple)


def serving_fn(model):
    """The serving function: uint8 (N, H, W, 3) of any size → probabilities and class map at (H, W)
    (a binary model: probabilities (N, H, W, 1) and a uint8 0/1 ``mask``)."""
    import tensorflow as tf

    fixed = fixed_input_size(model)
    binary = int(model.outputs[0].shape[-1]) == 1

    def serve(images):
        shape = tf.shape(images)
        h, w = shape[1], shape[2]
        size = fixed if fixed is not None else (nearest_multiple(h), nearest_multiple(w))
        x = tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear", antialias=False)
        probs = tf.cast(model(x, training=False), tf.float32)
        probs = tf.image.resize(probs, tf.stack([h, w]), method="bilinear", antialias=False)
        if binary:
            return {"probabilities": probs, "mask": tf.cast(probs[..., 0] >= BINARY_THRESHOLD, tf.uint8)}
        return {"probabilities": probs, "class_map": tf.argmax(probs, axis=-1, output_type=tf.int32)}

    return serve


def export_saved_model(model, out_dir, tflite: bool = True, verbose: bool = False, fold_bn: bool = True) -> Path:
    """Write ``model`` as a SavedModel at ``out_dir`` (and ``out_dir/model.tflite`` unless ``tflite=False``).

    With ``fold_bn`` (the default) every batch norm that follows a convolution
    is folded into it first (:func:`kseg.models.layers.fold_batch_norm`): the
    same outputs to float32 rounding, fewer ops. Written into a temporary
    folder beside ``out_dir``, then renamed, so an interrupted export never
    leaves a half-written folder.
    """
    import keras
    import tensorflow as tf

    from kseg.models.layers import float32_copy, fold_batch_norm

    # a model trained under mixed precision serves in float32
    model = fold_batch_norm(model, float32=True) if fold_bn else float32_copy(model)

    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    except OSError as err:
        raise KsegError(f"{out_dir}: cannot write the export ({err.strerror})") from None
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serving_fn(model),
                             input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        sm = tmp / "saved_model"
        archive.write_out(str(sm), verbose=verbose)
        if tflite:
            export_tflite(sm, sm / TFLITE_NAME)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(sm, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def export_tflite(saved_model_dir, path) -> Path:
    """Convert a SavedModel's ``serving_default`` to a TFLite file at ``path``."""
    import tensorflow as tf

    path = Path(path)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=["serving_default"])
    try:
        data = converter.convert()
    except Exception as err:  # the converter raises many types
        raise KsegError(f"{saved_model_dir}: TFLite conversion failed ({type(err).__name__}: {err}); "
                        f"export without it (--no-tflite)") from None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


@cli_entry
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m kseg.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .keras model file")
    p.add_argument("--out", required=True, help="the SavedModel folder to write")
    p.add_argument("--no-tflite", action="store_true", help=f"do not write {TFLITE_NAME}")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep batch norms as separate ops (by default those after a convolution are folded into it)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    model = load_model(args.model)
    t0 = time.time()
    out = export_saved_model(model, args.out, tflite=not args.no_tflite, fold_bn=not args.no_fold_bn)
    extra = "" if args.no_tflite else f" and {out / TFLITE_NAME}"
    print(f"kseg: wrote SavedModel {out}{extra} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
