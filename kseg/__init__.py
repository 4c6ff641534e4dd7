"""kseg: semantic segmentation for Keras 3 / TensorFlow.

Public names only; see the submodules for the details:

- :mod:`kseg.data`     iccv09 and folder loaders, the tf.data pipeline
- :mod:`kseg.models`   ``build(name, ...)``, ``unet(...)`` and backbones
- :mod:`kseg.losses`   ignore-aware segmentation losses
- :mod:`kseg.metrics`  confusion-matrix metrics
- :mod:`kseg.optimizers` Keras's Adam / AdamW with TensorFlow's fused update kernel
- :mod:`kseg.train`    the training command (``python -m kseg.train``)
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides kseg's own output;
# users who want it back set TF_CPP_MIN_LOG_LEVEL themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _default_onednn() -> None:
    """TensorFlow's x86 wheels turn their oneDNN kernels on by default only on CPUs with AVX-512 VNNI / BF16 or
    AMX; on every other x86 CPU (AVX2 laptops, AMD) they fall back to Eigen's convolutions, which train kseg's
    U-Net 1.5x slower (bench/speed.py --ab eigen, an AVX2 CPU). Turn oneDNN on unless the user chose (``TF_ENABLE_ONEDNN_OPTS=0`` keeps
    it off); it only takes effect when kseg is imported before TensorFlow."""
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


_default_onednn()

__version__ = "0.1.0"

from kseg.errors import KsegError  # noqa: E402,F401
