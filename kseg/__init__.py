"""kseg: semantic segmentation for Keras 3 / TensorFlow.

Public names only; see the submodules for the details:

- :mod:`kseg.data`     iccv09 and folder loaders, the tf.data pipeline
- :mod:`kseg.models`   ``build(name, ...)``, ``unet(...)`` and backbones
- :mod:`kseg.losses`   ignore-aware segmentation losses
- :mod:`kseg.metrics`  confusion-matrix metrics
- :mod:`kseg.train`    the training command (``python -m kseg.train``)
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides kseg's own output;
# users who want it back set TF_CPP_MIN_LOG_LEVEL themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from kseg.errors import KsegError  # noqa: E402,F401
