"""Running a trained model on images of any size: the library under ``kseg.predict`` and ``kseg.evaluate``.

- :func:`read_image` decodes an image file as the training pipeline does;
- :class:`Predictor` gives a ``.keras`` model's per-pixel probabilities for one image at its own size:
  the image is resized (bilinear) to the model's input size (its fixed size, or ``size``, or the
  nearest multiples of 32, :mod:`kseg.shapes`), and the probabilities are resized back; with
  test-time augmentation over ``scales`` and ``flip``, merged by mean or max;
- :class:`SavedModelPredictor` does the same for a SavedModel's ``serving_default``;
- :class:`RuntimePredictor` does the same for a ``.onnx``, ``.xml`` (OpenVINO) or ``.tflite`` (LiteRT) export
  (:mod:`kseg.runtimes`);
- :func:`load_predictor` gives a batch ``predict`` function for a ``.keras`` file, a SavedModel folder or one
  of those files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.errors import KsegError
from kseg.shapes import check_size, fixed_input_size, nearest_multiple

MERGES = ("mean", "max")


def read_image(path) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3), as the training pipeline does."""
    import tensorflow as tf

    from kseg.data.pipeline import decode_image

    try:
        return decode_image(tf.constant(str(path))).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as err:
        raise KsegError(f"{path}: not a readable image ({err.message.splitlines()[0]})") from None


def parse_scales(text) -> tuple[float, ...]:
    """``"0.5,0.75,1"`` → (0.5, 0.75, 1.0); each scale must be positive."""
    if isinstance(text, (int, float)):
        text = str(text)
    if not isinstance(text, str):
        vals = tuple(float(v) for v in text)
    else:
        try:
            vals = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise KsegError(f"bad --scales {text!r}: give numbers separated by commas, e.g. 0.75,1,1.25") from None
    if not vals or any(not v > 0 for v in vals):
        raise KsegError(f"bad --scales {text!r}: give positive numbers, e.g. 0.5,0.75,1,1.5,2")
    return vals


def flexible(model):
    """The same model (shared weights) with an input of any height and width."""
    if fixed_input_size(model) is None:
        return model
    cfg = model.get_config()
    try:
        first = cfg["layers"][0]
        if first["class_name"] != "InputLayer":
            raise KeyError
        first["config"]["batch_shape"] = [None, None, None, first["config"]["batch_shape"][-1]]
        clone = model.__class__.from_config(cfg)
    except (KeyError, TypeError, ValueError, IndexError):
        raise KsegError("this model has a fixed input size and cannot be rebuilt for other sizes: "
                        "predict at its own size (no --scales, no --size)") from None
    clone.set_weights(model.get_weights())
    return clone


def multiscale_split(model, scales, given: bool, merge_given: bool = False):
    """``(test-time scales, model scales)`` of ``--scales``: for a multi-scale model
    (:func:`kseg.models.multiscale`) the scales its own attention merges (its trained ones when not
    ``given``) and no test-time scales; for any other model, test-time scales averaged or maxed, and None."""
    from kseg.models.multiscale import info, is_multiscale

    if not is_multiscale(model):
        return scales, None
    if merge_given:
        raise KsegError("--merge: a multi-scale model merges its --scales with its own learned attention; "
                        "drop --merge")
    return (1.0,), (tuple(parse_scales(scales)) if given else tuple(info(model)["scales"]))


class Predictor:
    """Per-pixel probabilities for one image at its own size, with optional multi-scale and flip TTA.

    ``size``: the base (H, W) the image is resized to (default: the model's
    fixed input size, else the image's size rounded to multiples of 32, or with ``short_side``
    the image resized to that short side, keeping its aspect, then rounded).
    ``scales`` multiply the base size; ``flip`` adds mirrored copies;
    ``merge`` is "mean" or "max" over all the resized-back probability maps. ``model_scales``: the
    inference scales of a multi-scale model (:func:`kseg.models.multiscale`), merged by its own attention
    (see :func:`multiscale_split`).
    """

    def __init__(self, model, size=None, scales=(1.0,), flip: bool = False, merge: str = "mean",
                 model_scales=None, short_side: int | None = None):
        if merge not in MERGES:
            raise KsegError(f"bad merge {merge!r}: choose one of {', '.join(MERGES)}")
        if model_scales is not None:
            from kseg.models.multiscale import at_scales

            model = at_scales(model, model_scales)
        self.model = model
        self.fixed = fixed_input_size(model)
        self.size = check_size(size) if size is not None else None
        self.short_side = short_side
        self.scales = parse_scales(scales)
        self.flip = bool(flip)
        self.merge = merge
        self._flex = None
        self.num_classes = int(model.outputs[0].shape[-1])

    def base_size(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        if self.fixed is not None:
            return self.fixed
        if self.short_side:
            f = self.short_side / min(h, w)
            return nearest_multiple(h * f), nearest_multiple(w * f)
        return nearest_multiple(h), nearest_multiple(w)

    def _net(self, size):
        if self.fixed is None or tuple(size) == self.fixed:
            return self.model
        if self._flex is None:
            self._flex = flexible(self.model)
        return self._flex

    def _at_scale(self, x, scale: float, base, out_size) -> np.ndarray:
        """The probability maps (1 or 2 with flip) of batch ``x`` at ``scale`` of ``base``, resized to ``out_size``."""
        import tensorflow as tf

        size = (nearest_multiple(base[0] * scale), nearest_multiple(base[1] * scale))
        xs = tf.image.resize(x, size, method="bilinear", antialias=False)
        batch = tf.concat([xs, tf.reverse(xs, [2])], 0) if self.flip else xs
        probs = tf.cast(self._net(size)(batch, training=False), tf.float32)
        if self.flip:
            probs = tf.concat([probs[:1], tf.reverse(probs[1:], [2])], 0)
        return tf.image.resize(probs, out_size, method="bilinear", antialias=False).numpy()

    def __call__(self, image) -> np.ndarray:
        import tensorflow as tf

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise KsegError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        h, w = image.shape[:2]
        base = self.base_size(h, w)
        x = tf.cast(image[None], tf.float32)
        acc, n = None, 0
        for s in self.scales:
            for p in self._at_scale(x, s, base, (h, w)):
                if acc is None:
                    acc = p.copy()
                elif self.merge == "max":
                    np.maximum(acc, p, out=acc)
                else:
                    acc += p
                n += 1
        return acc / n if self.merge == "mean" else acc


class SavedModelPredictor:
    """Per-pixel probabilities for one image at its own size from a SavedModel's ``serving_default``.

    kseg's export resizes inside the signature; a signature with a fixed input size gets the image
    resized to it, and its output is resized back bilinearly. ``num_classes`` is the output's
    channels (1 for a binary model)."""

    def __init__(self, path):
        self.path = Path(path)
        self.predict, info = load_predictor(self.path)
        self.size = info["input_size"]
        if info.get("num_classes") is None:
            raise KsegError(f"{self.path}: its serving_default returns no per-pixel probabilities (N, H, W, C) "
                            f"that kseg.predict can read")
        self.num_classes = int(info["num_classes"])

    def __call__(self, image) -> np.ndarray:
        import tensorflow as tf

        image = np.asarray(image)
        h, w = image.shape[:2]
        x = image[None].astype(np.float32)
        if self.size is not None and tuple(self.size) != (h, w):
            x = tf.image.resize(x, self.size, method="bilinear", antialias=False).numpy()
        probs = np.asarray(self.predict(x), np.float32)[0]
        if probs.shape[:2] != (h, w):
            probs = tf.image.resize(probs[None], (h, w), method="bilinear", antialias=False).numpy()[0]
        return probs


class RuntimePredictor:
    """Per-pixel probabilities for one image at its own size from a model ``kseg export --format onnx|openvino|
    litert`` wrote, run in its runtime (:func:`kseg.runtimes.load_runtime`; the model resizes inside).
    ``num_classes`` is the output's channels (1 for a binary model)."""

    def __init__(self, path, runtime: str | None = None, threads: int | None = None):
        from kseg.runtimes import load_runtime

        self.runtime = load_runtime(path, runtime, threads)
        if self.runtime.num_classes is None:
            raise KsegError(f"{path}: the model does not say how many probability channels it returns")
        self.num_classes = self.runtime.num_classes

    def __call__(self, image) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise KsegError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        return self.runtime.predict(image)["probabilities"]


RUNTIME_SUFFIXES = (".onnx", ".xml", ".tflite")


def load_predictor(path, output_stride: int | None = None):
    """``(predict, info)`` for a ``.keras`` file or a SavedModel folder.

    ``predict(images)`` takes a float32 (N, H, W, 3) batch of raw RGB in [0, 255] (a ``.onnx``, ``.xml`` or
    ``.tflite`` export: rounded to uint8, of any size)
    and returns NumPy class scores (N, H, W, C), a binary model's foreground
    probability (N, H, W, 1), or class ids (N, H, W). ``info`` has ``format``,
    ``input_size`` ((H, W) or None) and ``num_classes`` (the output channels, 1 for
    a binary model; None when a SavedModel does not say). ``output_stride`` runs a
    ``.keras`` model at that stride (:func:`kseg.models.with_output_stride`).
    """
    path = Path(path)
    if not path.exists():
        raise KsegError(f"{path}: no such model file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            hint = " (it holds best.keras: pass that file)" if (path / "best.keras").exists() else ""
            raise KsegError(f"{path}: not a SavedModel folder, no saved_model.pb{hint}")
        if output_stride is not None:
            raise KsegError(f"{path}: --output-stride needs a .keras model, not a SavedModel")
        return _saved_model_predictor(path)
    if path.suffix.lower() in RUNTIME_SUFFIXES:
        if output_stride is not None:
            raise KsegError(f"{path}: --output-stride needs a .keras model, not an exported {path.suffix} file")
        return _runtime_predictor(path)
    from kseg.saving import load_keras_model

    model = load_keras_model(path)
    if output_stride is not None:
        from kseg.models import with_output_stride

        model = with_output_stride(model, output_stride)
    shape = tuple(model.input_shape)
    size = tuple(shape[1:3]) if len(shape) == 4 and None not in shape[1:3] else None

    def predict(images):
        return np.asarray(model.predict_on_batch(images))

    return predict, {"format": "keras", "input_size": size, "num_classes": int(model.outputs[0].shape[-1]),
                     "model": model}


def _output_key(keys):
    """The output to read from a serving signature's dict: the probabilities, else the only one."""
    keys = sorted(keys)
    key = next((k for k in keys if "prob" in k), None)
    if key is None and len(keys) == 1:
        key = keys[0]
    return key


def _serving_signature(path):
    """``(signature, input name or None, input spec)`` of a SavedModel's one-input ``serving_default``."""
    from kseg.saving import load_serving_default

    _, sig = load_serving_default(path)
    args, kwargs = sig.structured_input_signature
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1:
        raise KsegError(f"{path}: serving_default takes {len(specs)} inputs, expected one image batch")
    return sig, (next(iter(kwargs)) if kwargs else None), specs[0]


def _probability_output(outputs):
    """``(key, channels)``: which of a signature's outputs to read and its probability channels (or None)."""
    if isinstance(outputs, dict) and outputs:
        key = _output_key(outputs) or next((k for k in sorted(outputs) if outputs[k].shape.rank == 4),
                                           sorted(outputs)[0])
        out_spec = outputs[key]
    else:
        key, out_spec = None, outputs
    shape = getattr(out_spec, "shape", None)
    if shape is not None and shape.rank == 4 and shape[-1] is not None and out_spec.dtype.is_floating:
        return key, int(shape[-1])
    return key, None


def _saved_model_predictor(path):
    import tensorflow as tf

    sig, name, spec = _serving_signature(path)
    dtype = spec.dtype
    size = None
    if spec.shape.rank == 4 and spec.shape[1] is not None and spec.shape[2] is not None:
        size = (int(spec.shape[1]), int(spec.shape[2]))
    key, channels = _probability_output(sig.structured_outputs)

    def predict(images):
        x = np.asarray(images, np.float32)
        if dtype.is_integer:  # e.g. uint8 images: round the resized floats back
            x = np.clip(np.rint(x), dtype.min, dtype.max)
        x = tf.convert_to_tensor(x, dtype)
        out = sig(**{name: x}) if name else sig(x)
        if isinstance(out, dict):
            out = out[key] if key is not None else next(iter(out.values()))
        return np.asarray(out)

    return predict, {"format": "saved_model", "input_size": size, "num_classes": channels}


def _runtime_predictor(path):
    from kseg.runtimes import as_uint8_batch, load_runtime

    runtime = load_runtime(path)

    def predict(images):
        return runtime(as_uint8_batch(images, path)[0])["probabilities"]

    return predict, {"format": runtime.runtime, "input_size": None, "num_classes": runtime.num_classes}
