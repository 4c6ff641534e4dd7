"""kseg: semantic segmentation for Keras 3 / TensorFlow.

``import kseg`` makes its submodules reachable as attributes and registers every
class a saved kseg model names (losses, metrics, layers, optimizers, learning-rate
schedules, ``kseg.sm``'s losses and metrics), so ``keras.saving.load_model`` reads a
compiled kseg model right after it:

- :mod:`kseg.data`       iccv09 and folder loaders, the tf.data pipeline
- :mod:`kseg.models`     ``build(name, ...)``, ``unet(...)`` and backbones
- :mod:`kseg.losses`     ignore-aware segmentation losses
- :mod:`kseg.metrics`    confusion-matrix metrics
- :mod:`kseg.optimizers` Keras's Adam / AdamW with TensorFlow's fused update kernel
- :mod:`kseg.schedules`  learning-rate schedules
- :mod:`kseg.saving`     :func:`load_model` (a ``.keras`` file, a run folder or a SavedModel)
- :mod:`kseg.sm`         segmentation_models' API
- :mod:`kseg.export`, :mod:`kseg.train`, :mod:`kseg.evaluate`, :mod:`kseg.predict`: the commands

kseg leaves the environment alone: TensorFlow's oneDNN kernels are on by default
only on x86 CPUs with AVX-512 VNNI / BF16 or AMX; on others (AVX2, AMD) set
``TF_ENABLE_ONEDNN_OPTS=1`` before importing kseg or TensorFlow for about 1.5x
faster convolutions (the ``kseg`` commands do it for you).

A kseg command (the ``kseg`` script, ``python -m kseg...``) imports only what it
runs, so ``--help`` and option errors answer at once, and starts TensorFlow
quietly with oneDNN on (:mod:`kseg.startup`).
"""

from kseg import startup as _startup

__version__ = "0.1.0"

from kseg.errors import KsegError  # noqa: E402,F401


def __getattr__(name: str):
    """``kseg.<submodule>`` imports it on first use (a command's own process imports only what it runs)."""
    import importlib

    if name.startswith("_"):
        raise AttributeError(f"module 'kseg' has no attribute {name!r}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'kseg' has no attribute {name!r}") from None


def load_model(path):
    """Load a trained model: a ``.keras`` file or a run folder holding ``best.keras`` -> ``keras.Model``
    (float32); a SavedModel folder -> :class:`kseg.saving.ExportedModel`. See :func:`kseg.saving.load_model`."""
    from kseg.saving import load_model as _load

    return _load(path)


if _startup.is_command():
    _startup.prepare()
else:
    from kseg import data, losses, metrics, models, optimizers, saving, schedules, sm  # noqa: E402,F401
