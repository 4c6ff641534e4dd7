"""Serving a trained model: a SavedModel that takes uint8 images of any size, and a TFLite file.

:func:`export_saved_model` writes a SavedModel whose ``serving_default`` signature takes ``images``,
a uint8 RGB batch (N, H, W, 3) of any H and W, and returns ``probabilities`` (float32 (N, H, W, C),
at the input's size) and ``class_map`` (int32 (N, H, W)); a binary model (one output channel)
returns ``probabilities`` (N, H, W, 1) and a uint8 0/1 ``mask`` (``probabilities >=``
:data:`BINARY_THRESHOLD`). Inside, the batch is resized (bilinear) to the model's fixed input size,
else to the nearest multiples of 32 (:mod:`kseg.shapes`), and the probabilities are resized back.
:func:`export_tflite` converts that signature with ``tf.lite.TFLiteConverter``. ``kseg.export`` is
the command; ``kseg.train`` calls :func:`export_saved_model` too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kseg.errors import KsegError
from kseg.shapes import fixed_input_size, nearest_multiple

TFLITE_NAME = "model.tflite"
BINARY_THRESHOLD = 0.5


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
