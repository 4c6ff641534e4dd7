"""Adam and AdamW that update each variable with TensorFlow's fused kernel.

``kseg.optimizers.Adam`` / ``AdamW`` are ``keras.optimizers.Adam`` / ``AdamW``
(same arguments, same update, same saved state and config) whose per-variable
step runs TensorFlow's ``ResourceApplyAdam`` kernel: one pass that updates the
variable and both moments in place, instead of the eight elementwise ops (and
their temporary tensors) Keras composes it from. The update is Keras's:

    m <- m + (1 - beta_1) (g - m);  v <- v + (1 - beta_2) (g^2 - v)
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

(AdamW's decoupled weight decay is applied before it, by Keras, unchanged.)
Anything the kernel does not cover falls back to Keras's own step, per
variable: another backend than TensorFlow, ``amsgrad``, sparse gradients, a
distribution strategy, or a variable dtype other than float16/bfloat16/32/64.
``KSEG_FUSED_ADAM=0`` turns the fused step off everywhere (for comparisons).

``per_variable_steps=True`` counts Adam's bias-correction step per variable,
from that variable's first update (PyTorch's semantics), instead of from the
optimizer's first step (Keras's). The two agree when every variable trains
from the start. They differ for a variable that starts late, such as an
encoder unfrozen after N epochs (``kseg.train --freeze-epochs``): with the
global count t its fresh moments get the bias corrections of step t, not of
their own first steps, so its first updates are off Adam's usual size: for
i.i.d. gradients and a start after 216 steps (3 epochs of 72), 1.4x on the
first step, 2.9x on the 10th, 1.7x on the 100th; after only 20 steps, about
0.5x on the first. Each variable then holds one more int64 scalar in the
optimizer's state: its first step.

``lr_multipliers`` (``{variable path: factor}``, on ``Adam``, ``AdamW`` and
``SGD``) scales the learning rate of the variables it names, and their
decoupled weight decay with it, as PyTorch's parameter groups and mmseg's
``lr_mult`` do: ``kseg.train --encoder-lr-mult 0.1`` gives a pretrained
encoder's variables a tenth of the decoder's rate. Paths are Keras's
``variable.path`` (``"Conv1/kernel"``); a variable it does not name keeps
factor 1. The factors are part of the optimizer's config, so a saved model
resumes with them.
"""

from __future__ import annotations

import contextlib
import math
import os

import keras

from kseg.models.surgery import GroupedWeightDecay, adam_slots, variable_index

_FUSED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _fused_enabled() -> bool:
    return os.environ.get("KSEG_FUSED_ADAM", "1") != "0" and keras.backend.backend() == "tensorflow"


class _FusedAdamStep:
    """Mixin: ``update_step`` through ``tf.raw_ops.ResourceApplyAdam`` where it applies, and the optional
    per-variable step count (see the module docstring)."""

    def __init__(self, *args, per_variable_steps: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.per_variable_steps = bool(per_variable_steps)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        if self.per_variable_steps:
            # 0 = not updated yet, else the (1-based) optimizer step of the variable's first update
            self._first_steps = [self.add_variable((), "zeros", "int64", aggregation="only_first_replica",
                                                   name=f"{_name(v)}_first_step") for v in var_list]

    def get_config(self):
        return {**super().get_config(), "per_variable_steps": self.per_variable_steps}

    def _local_learning_rate(self, variable, learning_rate):
        """``learning_rate`` rescaled so that Adam's bias correction (which the update applies with the
        optimizer's step t) becomes the one of the variable's own step s = t - first + 1."""
        from keras import ops

        first = self._first_steps[variable_index(self, variable)]
        t = ops.cast(self.iterations, "int64") + 1
        started = ops.where(ops.equal(first, 0), t, first)
        first.assign(started)
        t_f = ops.cast(t, "float32")
        s_f = ops.cast(t - started + 1, "float32")
        b1, b2 = ops.cast(self.beta_1, "float32"), ops.cast(self.beta_2, "float32")

        def correction(n):
            return ops.sqrt(1.0 - ops.power(b2, n)) / (1.0 - ops.power(b1, n))

        factor = correction(s_f) / correction(t_f)
        return learning_rate * ops.cast(factor, keras.backend.standardize_dtype(learning_rate.dtype)
                                        if hasattr(learning_rate, "dtype") else "float32")

    def _fusable(self, gradient, variable) -> bool:
        import tensorflow as tf

        return (_fused_enabled() and not self.amsgrad and not isinstance(gradient, tf.IndexedSlices)
                and not tf.distribute.has_strategy()
                and keras.backend.standardize_dtype(variable.dtype) in _FUSED_DTYPES
                and hasattr(_tf_variable(variable), "handle"))

    def update_step(self, gradient, variable, learning_rate):
        if self.per_variable_steps:
            learning_rate = self._local_learning_rate(variable, learning_rate)
        if not self._fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        var = _tf_variable(variable)
        dtype = var.dtype
        m, v = (_tf_variable(slot) for slot in adam_slots(self, variable))
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype), use_locking=False, use_nesterov=False)


class _LrMultipliers(GroupedWeightDecay):
    """Mixin: ``lr_multipliers`` scale some variables' learning rate and weight decay (see the module
    docstring)."""

    def __init__(self, *args, lr_multipliers: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {}
        for path, factor in dict(lr_multipliers or {}).items():
            if not (isinstance(factor, (int, float)) and factor > 0 and math.isfinite(factor)):
                raise ValueError(f"lr_multipliers[{path!r}] = {factor!r}: give a positive number")
            self.lr_multipliers[str(path)] = float(factor)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # one Python float per variable, in the optimizer's variable order: nothing extra in the traced step
        self._lr_factors = [self.lr_multipliers.get(_path(v), 1.0) for v in var_list]

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}

    def _lr_factor(self, variable) -> float:
        if not self.lr_multipliers:
            return 1.0
        return self._lr_factors[variable_index(self, variable)]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._lr_factor(variable)
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)

    def weight_decay_groups(self, variables):
        """Keras's decoupled decay (``w -= w * weight_decay * lr``) with each variable's lr factor: the
        variables by factor (:class:`kseg.models.surgery.GroupedWeightDecay`); None without factors."""
        if not self.lr_multipliers:
            return None
        groups = {}
        for v in variables:
            groups.setdefault(self._lr_factor(v), []).append(v)
        return groups


def _path(variable) -> str:
    path = getattr(variable, "path", None)
    return str(path) if path else str(variable.name).split(":")[0]


def _name(variable) -> str:
    """``_path(variable)`` as one name (for the optimizer's own variables)."""
    return _path(variable).replace("/", "_").replace(":", "_")


def _tf_variable(variable):
    """The tf.Variable under a Keras variable (or the tf.Variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="kseg")
class Adam(_LrMultipliers, _FusedAdamStep, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with TensorFlow's fused update and optional per-variable steps and learning-rate
    factors (see the module docstring)."""


@keras.saving.register_keras_serializable(package="kseg")
class AdamW(_LrMultipliers, _FusedAdamStep, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with TensorFlow's fused update and optional per-variable steps and learning-rate
    factors (see the module docstring)."""


@keras.saving.register_keras_serializable(package="kseg")
class SGD(_LrMultipliers, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with optional per-variable learning-rate factors (see the module docstring)."""


@contextlib.contextmanager
def averaged_weights(swap):
    """Inside the block, the model holds its optimizer's moving averages of the weights (``use_ema``);
    after it, the trained weights again. ``swap`` is the fit's ``keras.callbacks.SwapEMAWeights`` (its
    test hooks do the swapping and know whether the averages are in already); ``None`` does nothing."""
    if swap is None:
        yield
        return
    swap.on_test_begin()
    try:
        yield
    finally:
        swap.on_test_end()
