"""Running an exported model in a deployment runtime: one class per runtime, one call for all.

Every runtime takes what ``kseg export`` serves: a uint8 RGB batch (N, H, W, 3) of any size, and
returns a dict of NumPy arrays at the input's size, ``probabilities`` float32 (N, H, W, C) and
``class_map`` int32 (N, H, W) (a binary model: ``probabilities`` (N, H, W, 1) and a uint8 0/1 ``mask``).

============  ====================================  ===========================  =================
runtime       model path                            Python package               extra
============  ====================================  ===========================  =================
keras         ``.keras`` file or run folder         (kseg's own)
saved_model   SavedModel folder                     (TensorFlow)
onnx          ``.onnx`` file                        onnxruntime                  ``kseg[onnx]``
openvino      ``.xml`` file (beside its ``.bin``)   openvino                     ``kseg[openvino]``
litert        ``.tflite`` file                      ai-edge-litert (else TF's)   ``kseg[litert]``
============  ====================================  ===========================  =================

>>> rt = kseg.runtimes.load_runtime("model.onnx")      # the runtime is read from the suffix
>>> out = rt(batch_uint8)                             # {"probabilities", "class_map"}
>>> out = rt.predict(image)                           # one (H, W, 3) image: arrays without the N axis

``threads`` sets each runtime's CPU threads (default: the runtime's own choice; LiteRT: all cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

FORMATS = ("saved_model", "onnx", "openvino", "litert")  # what kseg export writes
RUNTIMES = ("keras",) + FORMATS  # what kseg predict runs
RUNTIME_NAMES = {"onnx": "an ONNX", "openvino": "an OpenVINO", "litert": "a LiteRT"}  # for messages
OUTPUT_NAMES = {"probabilities", "class_map", "mask"}
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}


def require(module: str, what: str, extra: str):
    """Import ``module``; a missing one is a one-line :class:`KsegError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise KsegError(f"{what} needs the Python package {module.split('.')[0]}: "
                        f"pip install 'kseg[{extra}]'") from None


def runtime_of(path) -> str:
    """The runtime that runs ``path``: a SavedModel folder, a ``.keras`` file or run folder, or a
    ``.onnx`` / ``.xml`` / ``.tflite`` file (one-line :class:`KsegError` otherwise)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        if (path / "best.keras").is_file():
            return "keras"
        raise KsegError(f"{path}: neither a SavedModel folder (no saved_model.pb) nor a run folder (no best.keras)")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        return "keras"
    for runtime, s in SUFFIXES.items():
        if suffix == s:
            return runtime
    raise KsegError(f"{path}: cannot tell its runtime from the name: give a .keras file, a SavedModel folder, "
                    f"or a .onnx, .xml (OpenVINO) or .tflite (LiteRT) file")


def check_runtime(path, runtime: str | None) -> str:
    """``runtime`` (or the one read from ``path``), refused in one line when it cannot run ``path``."""
    found = runtime_of(path)
    if runtime is None or runtime == found:
        return found
    if runtime not in RUNTIMES:
        raise KsegError(f"bad --runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    want = SUFFIXES.get(runtime, "a SavedModel folder" if runtime == "saved_model" else "a .keras file")
    raise KsegError(f"{path}: --runtime {runtime} runs {want}, and this is a {found} model "
                    f"(leave --runtime out to run it with {found})")


def as_uint8_batch(images, path) -> tuple[np.ndarray, bool]:
    """``(uint8 (N, H, W, 3) batch, whether one image came)``; float pixels 0..255 are rounded and clipped."""
    x = np.asarray(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise KsegError(f"{path}: predict takes RGB images (H, W, 3) or (N, H, W, 3), got shape {x.shape}")
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x.astype(np.float32)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x), single


class Runtime:
    """An exported kseg model in one runtime.

    Attributes:
        path: the model's file or folder.
        runtime: the runtime's name (:data:`RUNTIMES`).
        num_classes: the probability channels (1 for a binary model), None when the model does not say.
        binary: True for a binary model (``probabilities`` (N, H, W, 1) and a 0/1 ``mask``).
        outputs: the names of the arrays it returns.
    """

    runtime = ""

    def _describe(self, channels, outputs) -> None:
        outputs = tuple(sorted(outputs))
        if "probabilities" not in outputs:
            raise KsegError(f"{self.path}: not a kseg export (it returns {list(outputs)}; kseg's returns "
                            f"probabilities and class_map or mask)")
        self.num_classes = int(channels) if isinstance(channels, (int, np.integer)) and channels > 0 else None
        self.binary = "mask" in outputs
        self.outputs = outputs

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run a uint8 (N, H, W, 3) batch; the outputs at the input's size."""
        raise NotImplementedError

    def predict(self, images) -> dict[str, np.ndarray]:
        """Run one RGB image (H, W, 3) or a batch (N, H, W, 3) of any size (uint8, or float 0..255 pixels,
        rounded to uint8); for one image, the arrays come without the N axis."""
        x, single = as_uint8_batch(images, self.path)
        out = self(x)
        return {key: (v[0] if single else v) for key, v in out.items()}

    def __repr__(self) -> str:
        kind = "binary" if self.binary else f"{self.num_classes} classes"
        return f"{type(self).__name__}({str(self.path)!r}, {kind}, outputs={list(self.outputs)})"


class KerasRuntime(Runtime):
    """A ``keras.Model`` (or a ``.keras`` file) behind kseg's serving function (:func:`kseg.serving.serving_fn`)."""

    runtime = "keras"

    def __init__(self, model, threads: int | None = None):
        import tensorflow as tf

        from kseg.serving import serving_fn

        if isinstance(model, (str, os.PathLike)):
            from kseg.saving import load_model

            self.path = Path(model)
            model = load_model(model)
        else:
            self.path = Path(getattr(model, "name", "model"))
        self.model = model
        serve = serving_fn(model)
        self._fn = tf.function(serve, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        c = int(model.outputs[0].shape[-1])
        self._describe(c, ("probabilities", "mask" if c == 1 else "class_map"))

    def __call__(self, images):
        return {k: v.numpy() for k, v in self._fn(images).items()}


class SavedModelRuntime(Runtime):
    """A SavedModel folder written by ``kseg export`` (its ``serving_default`` signature)."""

    runtime = "saved_model"

    def __init__(self, path, threads: int | None = None):
        from kseg.saving import load_serving_default

        self.path = Path(path)
        loaded, signature = load_serving_default(self.path)
        _, inputs = signature.structured_input_signature
        outputs = signature.structured_outputs
        if set(inputs) != {"images"} or not isinstance(outputs, dict) or "probabilities" not in outputs:
            raise KsegError(f"{self.path}: not a kseg export (its serving_default takes {sorted(inputs)} and "
                            f"returns {sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__}; "
                            f"kseg's takes images and returns probabilities)")
        self._loaded = loaded  # keeps the signature's variables alive
        self.signature = signature
        self._dtype = inputs["images"].dtype
        self._describe(outputs["probabilities"].shape[-1], outputs)

    def __call__(self, images):
        import tensorflow as tf

        out = self.signature(images=tf.convert_to_tensor(images, self._dtype))
        return {key: np.asarray(v) for key, v in out.items()}


class OnnxRuntime(Runtime):
    """A ``.onnx`` file in onnxruntime (CPU)."""

    runtime = "onnx"

    def __init__(self, path, threads: int | None = None):
        ort = require("onnxruntime", "--runtime onnx", "onnx")
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for a bad file
            raise KsegError(f"{self.path}: onnxruntime cannot load it ({_one_line(err)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise KsegError(f"{self.path}: takes {len(inputs)} inputs; a kseg export takes one image batch")
        self._input = inputs[0].name
        self._names = [o.name for o in self.session.get_outputs()]
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        self._describe(shapes.get("probabilities", [None])[-1], self._names)

    def __call__(self, images):
        return dict(zip(self._names, self.session.run(self._names, {self._input: images})))


class OpenVinoRuntime(Runtime):
    """An OpenVINO IR (``.xml`` beside its ``.bin``) compiled for the CPU, in float32 (int8 where quantized)."""

    runtime = "openvino"

    def __init__(self, path, threads: int | None = None):
        ov = require("openvino", "--runtime openvino", "openvino")
        self.path = Path(path)
        config = {"INFERENCE_PRECISION_HINT": "f32"}  # not bf16 on CPUs that have it: the float32 model's outputs
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        except Exception as err:  # openvino raises RuntimeError with many lines
            raise KsegError(f"{self.path}: OpenVINO cannot load it ({_one_line(err)})") from None
        self._request = self.compiled.create_infer_request()
        # a port may carry several tensor names (kseg's output name and a graph op's): take kseg's
        self._ports = [(min(o.get_names() & OUTPUT_NAMES or {o.get_any_name()}), o) for o in self.compiled.outputs]
        shapes = {name: o.get_partial_shape() for name, o in self._ports}
        channels = shapes["probabilities"][-1] if "probabilities" in shapes else None
        self._describe(channels.get_length() if channels is not None and channels.is_static else None,
                       [name for name, _ in self._ports])

    def __call__(self, images):
        res = self._request.infer({0: images})
        return {name: np.array(res[port]) for name, port in self._ports}


class LiteRtRuntime(Runtime):
    """A ``.tflite`` file in LiteRT (``ai_edge_litert``; TensorFlow's ``tf.lite.Interpreter`` when it is not
    installed), with XNNPACK on ``threads`` CPU threads (default: all cores)."""

    runtime = "litert"

    def __init__(self, path, threads: int | None = None):
        self.path = Path(path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=int(threads or os.cpu_count() or 1))
            self.runner = self.interpreter.get_signature_runner("serving_default")
        except Exception as err:  # the interpreter raises ValueError/RuntimeError for a bad file
            raise KsegError(f"{self.path}: LiteRT cannot load it ({_one_line(err)})") from None
        sig = self.interpreter.get_signature_list()["serving_default"]
        if sig["inputs"] != ["images"]:
            raise KsegError(f"{self.path}: its serving_default takes {sig['inputs']}; kseg's takes images")
        details = self.runner.get_output_details()
        channels = details["probabilities"]["shape_signature"][-1] if "probabilities" in details else None
        self._describe(int(channels) if channels is not None and channels > 0 else None, sig["outputs"])

    def __call__(self, images):
        return {k: np.asarray(v) for k, v in self.runner(images=images).items()}


CLASSES = {"keras": KerasRuntime, "saved_model": SavedModelRuntime, "onnx": OnnxRuntime,
           "openvino": OpenVinoRuntime, "litert": LiteRtRuntime}


def load_runtime(path, runtime: str | None = None, threads: int | None = None) -> Runtime:
    """The model at ``path`` in ``runtime`` (default: read from the path, :func:`runtime_of`)."""
    path = Path(path)
    if not path.exists():
        raise KsegError(f"{path}: no such model file or folder")
    runtime = check_runtime(path, runtime)
    return CLASSES[runtime](path, threads=threads)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"
