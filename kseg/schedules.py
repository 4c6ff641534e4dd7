"""Learning-rate schedules with linear warm-up: ``constant``, ``cosine`` and ``poly``.

``make(name, lr, total_steps, warmup_steps)`` returns a Keras
``LearningRateSchedule`` (or the float ``lr`` for ``constant`` without warm-up):

- ``cosine``: ``lr * (alpha + (1 - alpha) * (1 + cos(pi * t)) / 2)``, alpha = 0.01;
- ``poly``: ``lr * (1 - t) ** 0.9`` (DeepLab's "poly" policy);
- ``constant``: ``lr``;

where ``t`` runs from 0 to 1 over the steps after the warm-up. During the
``warmup_steps`` first steps the rate rises linearly from ``lr / warmup_steps``
to ``lr``. Schedules are registered Keras objects, so a ``.keras`` checkpoint
that holds its optimizer loads without custom objects, and resuming continues
the curve from the optimizer's saved step count.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kseg.errors import KsegError

SCHEDULES = ("constant", "cosine", "poly")


@keras.saving.register_keras_serializable(package="kseg")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up for ``warmup_steps``, then ``kind`` decay over the remaining steps."""

    def __init__(self, lr: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
                 alpha: float = 0.01, power: float = 0.9):
        if kind not in SCHEDULES:
            raise KsegError(f"unknown schedule {kind!r}: choose one of {', '.join(SCHEDULES)}")
        self.lr = float(lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.alpha = float(alpha)
        self.power = float(power)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 0))
        span = float(max(self.total_steps - self.warmup_steps, 1))
        t = ops.clip((step - warm) / span, 0.0, 1.0)
        if self.kind == "cosine":
            decayed = self.lr * (self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + ops.cos(math.pi * t)))
        elif self.kind == "poly":
            decayed = self.lr * ops.power(1.0 - t, self.power)
        else:
            decayed = self.lr * ops.ones_like(t)
        if warm <= 0:
            return decayed
        ramp = self.lr * ops.minimum(step + 1.0, warm) / warm
        return ops.where(step < warm, ramp, decayed)

    def get_config(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind, "alpha": self.alpha, "power": self.power}


def make(name: str, lr: float, total_steps: int, warmup_steps: int = 0):
    """The schedule ``name`` peaking at ``lr`` over ``total_steps`` optimizer steps."""
    if name not in SCHEDULES:
        raise KsegError(f"unknown --schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0 or total_steps < 1:
        raise KsegError(f"bad schedule length: {total_steps} steps with {warmup_steps} warm-up steps")
    if name == "constant" and warmup_steps == 0:
        return float(lr)
    return WarmupDecay(lr, total_steps, warmup_steps, kind=name)
