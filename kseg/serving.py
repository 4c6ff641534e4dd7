"""Serving a trained model: a SavedModel that takes uint8 images of any size, a TFLite file, and
the same function in ONNX, OpenVINO and LiteRT files.

:func:`export_saved_model` writes a SavedModel whose ``serving_default`` signature takes ``images``,
a uint8 RGB batch (N, H, W, 3) of any H and W, and returns ``probabilities`` (float32 (N, H, W, C),
at the input's size) and ``class_map`` (int32 (N, H, W)); a binary model (one output channel)
returns ``probabilities`` (N, H, W, 1) and a uint8 0/1 ``mask`` (``probabilities >=``
:data:`BINARY_THRESHOLD`). Inside, the batch is resized (bilinear) to the model's fixed input size,
else to the nearest multiples of 32 (:mod:`kseg.shapes`), and the probabilities are resized back.
:func:`export_tflite` converts that signature with ``tf.lite.TFLiteConverter``. ``kseg.export`` is
the command; ``kseg.train`` calls :func:`export_saved_model` too.

:func:`export_model` writes the same serving function in one of :data:`FORMATS`: a SavedModel folder,
or a ``.onnx``, OpenVINO ``.xml`` (+ ``.bin``) or LiteRT ``.tflite`` file, each through Keras's own exporter
(``model.export(path, format=...)``) of :func:`serving_model`, so every runtime takes uint8 images of any size
and batch and returns the same outputs; ``int8=True`` quantizes OpenVINO and LiteRT files after training
on ``calibration`` images (:mod:`kseg.quantization`). :mod:`kseg.runtimes` runs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kseg.errors import KsegError
from kseg.shapes import fixed_input_size, nearest_multiple

FORMATS = ("saved_model", "onnx", "openvino", "litert")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
# format -> (Python modules Keras's exporter needs, the kseg extra that installs them)
NEEDS = {"onnx": (("tf2onnx", "onnx"), "onnx"), "openvino": (("openvino",), "openvino"), "litert": ((), "litert")}
TFLITE_NAME = "model.tflite"
BINARY_THRESHOLD = 0.5


def staging_dir(out: Path) -> Path:
    """A new hidden folder beside ``out`` (its parents made) where an export is written before it is moved
    into place; one line naming ``out`` if it cannot be made."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as err:
        raise KsegError(f"{out}: cannot write the export ({err.strerror})") from None


def move_into_place(staged: Path, out: Path) -> None:
    """Replace ``out`` (if any) with the finished export folder ``staged``."""
    if out.exists():
        shutil.rmtree(out)
    os.replace(staged, out)


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
    tmp = staging_dir(out_dir)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serving_fn(model),
                             input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        sm = tmp / "saved_model"
        archive.write_out(str(sm), verbose=verbose)
        if tflite:
            export_tflite(sm, sm / TFLITE_NAME)
        move_into_place(sm, out_dir)
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


def serving_model(model):
    """A built ``keras.Model`` whose ``call(images)`` is :func:`serving_fn` of ``model`` (uint8 (N, H, W, 3) in,
    the output dict out): what Keras's exporters (``model.export(format=...)``) convert."""
    import keras
    import tensorflow as tf

    serve = serving_fn(model)

    class Serving(keras.Model):
        def __init__(self):
            super().__init__(name="kseg_serving")
            self.net = model  # tracks the variables

        def call(self, images):
            return serve(images)

    wrapper = Serving()
    wrapper(tf.zeros([1, 32, 32, 3], tf.uint8))  # Keras's exporters take built models only
    return wrapper


def output_path(out, fmt: str) -> Path:
    """``out`` with the suffix of ``fmt``'s file added when it has none (an existing folder: ``model`` + suffix
    in it); another suffix is refused."""
    out = Path(out)
    want = SUFFIXES[fmt]
    if out.is_dir():
        return out / f"model{want}"
    if out.suffix.lower() == want:
        return out
    if out.suffix:
        raise KsegError(f"{out}: --format {fmt} writes a {want} file: give --out a name ending in {want}")
    return out.with_name(out.name + want)


def export_model(model, out, fmt: str = "saved_model", tflite: bool = True, fold_bn: bool = True,
                 int8: bool = False, calibration=None, verbose: bool = False) -> Path:
    """Write ``model``'s serving function (:func:`serving_fn`) in format ``fmt`` (:data:`FORMATS`) at ``out``;
    returns the path written (a missing suffix is added: ``out`` + ``.onnx``, ``.xml`` or ``.tflite``).

    ``saved_model`` is :func:`export_saved_model` (``tflite``: also its ``model.tflite``). The others go
    through Keras's exporter of :func:`serving_model`; LiteRT files hold TFLite built-in ops only (no
    TensorFlow ops, which ai-edge-litert cannot run). ``int8`` (OpenVINO, LiteRT) quantizes after training
    on ``calibration``, a list of uint8 (1, H, W, 3) images (:func:`kseg.quantization.calibration_images`).
    The file is written under a temporary name and renamed into place.
    """
    if fmt not in FORMATS:
        raise KsegError(f"bad --format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if int8 and fmt not in ("openvino", "litert"):
        raise KsegError(f"--int8 is for --format openvino or litert, not {fmt}")
    if int8 and not calibration:
        raise KsegError("--int8 needs calibration images: give --calibration with training images")
    if fmt == "saved_model":
        return export_saved_model(model, out, tflite=tflite, verbose=verbose, fold_bn=fold_bn)
    from kseg.runtimes import require

    modules, extra = NEEDS[fmt]
    for module in modules + (("nncf",) if int8 and fmt == "openvino" else ()):
        require(module, f"--format {fmt}" + (" --int8" if int8 else ""), extra)
    from kseg.models.layers import float32_copy, fold_batch_norm

    model = fold_batch_norm(model, float32=True) if fold_bn else float32_copy(model)
    out = output_path(out, fmt)
    tmp = staging_dir(out)
    try:
        written = _convert(serving_model(model), tmp / out.name, fmt, int8, calibration)
        for path in sorted(written, key=lambda p: p.suffix == out.suffix):  # an OpenVINO .xml after its .bin
            os.replace(path, out.with_name(out.stem + path.suffix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(wrapper, path: Path, fmt: str, int8: bool, calibration) -> list[Path]:
    """Convert the serving model to ``path`` in ``fmt``; the files written."""
    import tensorflow as tf

    spec = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    kwargs = {}
    if fmt == "litert":
        kwargs["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
        if int8:
            from kseg.quantization import litert_int8_options

            kwargs.update(litert_int8_options(calibration))
    target = path.with_name("float32" + path.suffix) if int8 and fmt == "openvino" else path
    try:
        wrapper.export(str(target), format=fmt, input_signature=spec, verbose=False, **kwargs)
    except KsegError:
        raise
    except Exception as err:  # the converters raise many types
        text = " ".join(str(err).split())[:300]
        raise KsegError(f"{path.name}: Keras's {fmt} export failed ({type(err).__name__}: {text})") from None
    if int8 and fmt == "openvino":
        from kseg.quantization import quantize_openvino

        quantize_openvino(target, path, calibration)
    return [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]
