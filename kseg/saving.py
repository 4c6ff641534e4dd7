"""Loading a trained model: ``kseg.load_model(path)``.

``path`` may be

- a ``.keras`` file (``best.keras``): a ``keras.Model`` in float32 (:func:`load_keras_model`);
- a run folder that holds ``best.keras`` (what ``kseg train --out`` writes): its ``best.keras``, as above;
- a SavedModel folder written by ``kseg export`` (or by training, ``runs/x/saved_model``): an
  :class:`ExportedModel`, whose ``predict(images)`` takes uint8 (or 0..255 float) RGB images of any
  size and returns a dict of NumPy arrays, and which says what it serves (``num_classes``, ``binary``);
- a SavedModel folder that ``kseg export`` wrote for an instance model (Mask R-CNN): a
  :class:`kseg.detection.serving.ExportedInstanceModel` (``predict(image)`` returns its ``Instances``);
- a ``.onnx``, ``.xml`` (OpenVINO) or ``.tflite`` (LiteRT) file written by ``kseg export --format ...``: its
  :class:`kseg.runtimes.Runtime`, with the same ``predict`` (the runtime's package must be installed).

>>> model = kseg.load_model("runs/x/best.keras")          # keras.Model: model.predict(batch) as usual
>>> served = kseg.load_model("runs/x/saved_model")
>>> out = served.predict(image)                            # image (H, W, 3) uint8 -> out["class_map"] (H, W)

Every problem with ``path`` raises :class:`~kseg.errors.KsegError` in one line naming it.
``import kseg`` registers kseg's losses, metrics, layers, optimizers and schedules, so
``keras.saving.load_model`` also reads a compiled kseg model after it.
"""

from __future__ import annotations

from pathlib import Path

from kseg.errors import KsegError
from kseg.runtimes import SavedModelRuntime, load_runtime

KERAS_FILE = "best.keras"


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def load_serving_default(path) -> tuple:
    """``(loaded object, its serving_default signature)`` of the SavedModel folder ``path``; a folder TensorFlow
    cannot load, or one without that signature, is a one-line :class:`KsegError` naming it. Keep the loaded
    object alive as long as the signature is used (it holds the variables)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # TF raises many types for a broken folder
        raise KsegError(f"{path}: cannot load the SavedModel ({_one_line(err)})") from None
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise KsegError(f"{path}: the SavedModel has no serving_default signature")
    return loaded, signature


def _register() -> None:
    """Import the modules whose classes a saved kseg model names (losses, metrics, layers, optimizers...)."""
    import kseg.detection.maskrcnn  # noqa: F401  (instance models)
    import kseg.losses  # noqa: F401
    import kseg.metrics  # noqa: F401
    import kseg.models  # noqa: F401  (layers and learning-rate schedules)
    import kseg.optimizers  # noqa: F401
    import kseg.sm  # noqa: F401  (kseg.sm's losses and metrics)


def _keras_hub_if_named(path: Path) -> None:
    """Import keras-hub when the ``.keras`` file holds its layers (a keras-hub preset kseg wrapped,
    :mod:`kseg.models.keras_hub_presets`); a one-line error where it is not installed."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            named = b'"keras_hub' in z.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return  # not a .keras archive: keras's own error says so below
    if named:
        from kseg.models.keras_hub_presets import import_keras_hub

        import_keras_hub(str(path))


def load_keras_model(path):
    """Load a ``.keras`` model (safe mode on, not compiled) for export, evaluation or prediction, in float32.

    A model trained under mixed precision (``kseg.train --precision mixed_bfloat16``) comes back as its
    float32 copy (:func:`kseg.models.layers.float32_copy`: the same float32 weights), so it evaluates and
    predicts at full speed on any CPU."""
    path = Path(path)
    if not path.exists():
        raise KsegError(f"{path}: no such model file")
    import keras

    _register()
    _keras_hub_if_named(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for a file that is not a model
        raise KsegError(f"{path}: not a loadable Keras model ({_one_line(err)})") from None
    from kseg.models.layers import float32_copy

    return float32_copy(model)


class ExportedModel(SavedModelRuntime):
    """A SavedModel written by ``kseg export``, ready to predict (:class:`kseg.runtimes.SavedModelRuntime`).

    Attributes:
        path: the SavedModel folder.
        num_classes: the number of probability channels (1 for a binary model: the foreground probability).
        binary: True when it serves a binary model (outputs ``probabilities`` (N, H, W, 1) and a 0/1 ``mask``),
            False for a multi-class model (``probabilities`` (N, H, W, C) and ``class_map``).
        outputs: the names of the arrays :meth:`predict` returns.
        signature: TensorFlow's ``serving_default`` function itself.

    :meth:`predict` takes one RGB image (H, W, 3) or a batch (N, H, W, 3) of any size: uint8 images go in as
    they are; float images are taken as 0..255 pixel values (as kseg's models take them), rounded and clipped
    to uint8. It returns ``{"probabilities": float32 (N, H, W, C), "class_map": int32 (N, H, W)}`` (a binary
    model: ``probabilities`` (N, H, W, 1) and ``mask`` uint8 (N, H, W)); for one image, without the N axis.
    """


def load_model(path):
    """Load a trained model from a ``.keras`` file, a run folder holding ``best.keras``, a SavedModel folder,
    or a ``.onnx`` / ``.xml`` (OpenVINO) / ``.tflite`` (LiteRT) file that ``kseg export`` wrote; or the name
    of a pretrained segmenter (``segformer-b0-ade20k``, ... :mod:`kseg.models.presets`), downloaded once.

    Returns a ``keras.Model`` in float32 for a ``.keras`` file or a run folder
    (:func:`load_keras_model`), an :class:`ExportedModel` for a SavedModel folder, and the
    :class:`kseg.runtimes.Runtime` of the others (its ``predict`` as :meth:`ExportedModel.predict`).
    """
    from kseg.models.presets import is_preset, load_preset

    if is_preset(str(path)):
        return load_preset(str(path))[0]
    path = Path(path)
    if not path.exists():
        raise KsegError(f"{path}: no such model file or folder")
    if path.is_dir():
        from kseg.detection.serving import INFO_FILE, ExportedInstanceModel

        if (path / INFO_FILE).is_file():
            return ExportedInstanceModel(path)
        if (path / "saved_model.pb").is_file():
            return ExportedModel(path)
        if (path / KERAS_FILE).is_file():
            return load_keras_model(path / KERAS_FILE)
        raise KsegError(f"{path}: neither a SavedModel folder (no saved_model.pb) nor a run folder "
                        f"(no {KERAS_FILE})")
    if path.suffix.lower() in (".onnx", ".xml", ".tflite"):
        return load_runtime(path)
    return load_keras_model(path)
