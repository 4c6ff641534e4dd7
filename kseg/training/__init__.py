"""Training as a library: ``kseg.training.fit(TrainConfig(...))``; ``python -m kseg.train`` is its command.

- :mod:`kseg.training.config`    :class:`TrainConfig`, every option with its default and checks
- :mod:`kseg.training.data`      the data, split and pipelined
- :mod:`kseg.training.model`     the model, its encoder, loss, metrics, optimizer
- :mod:`kseg.training.callbacks` history and best.keras, resume state, curves, unfreezing; the sparse-target loss
- :mod:`kseg.training.resume`    finished and interrupted runs in an output folder
- :mod:`kseg.training.report`    run.json, metrics.json, predictions.png
- :mod:`kseg.training.fit`       :func:`fit`: data → model → compile → callbacks → ``model.fit`` → outputs

Importing this package does not import TensorFlow; :func:`fit` and the callbacks do.
"""

from kseg.training.config import TrainConfig
from kseg.training.fit import fit  # the function: ``kseg.training.fit(config)``; the module is sys.modules'


__all__ = ["TrainConfig", "fit"]
