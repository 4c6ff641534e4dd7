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
"""

from __future__ import annotations

import os

import keras

_FUSED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _fused_enabled() -> bool:
    return os.environ.get("KSEG_FUSED_ADAM", "1") != "0" and keras.backend.backend() == "tensorflow"


class _FusedAdamStep:
    """Mixin: ``update_step`` through ``tf.raw_ops.ResourceApplyAdam`` where it applies."""

    def _fusable(self, gradient, variable) -> bool:
        import tensorflow as tf

        return (_fused_enabled() and not self.amsgrad and not isinstance(gradient, tf.IndexedSlices)
                and not tf.distribute.has_strategy()
                and keras.backend.standardize_dtype(variable.dtype) in _FUSED_DTYPES
                and hasattr(_tf_variable(variable), "handle"))

    def update_step(self, gradient, variable, learning_rate):
        if not self._fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        var = _tf_variable(variable)
        dtype = var.dtype
        index = self._get_variable_index(variable)
        m, v = _tf_variable(self._momentums[index]), _tf_variable(self._velocities[index])
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype), use_locking=False, use_nesterov=False)


def _tf_variable(variable):
    """The tf.Variable under a Keras variable (or the tf.Variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="kseg")
class Adam(_FusedAdamStep, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with TensorFlow's fused update (see the module docstring)."""


@keras.saving.register_keras_serializable(package="kseg")
class AdamW(_FusedAdamStep, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with TensorFlow's fused update (see the module docstring)."""
