"""Every use kseg makes of Keras's and TensorFlow's private internals, one small function each.

Keras 3 has no public API for these, and kseg needs them:

- a functional graph's wiring (:func:`inbound_nodes`, :func:`keras_history`):
  folding batch norms into convolutions and the atrous conversion walk the graph;
- BatchNormalization's moments step (:func:`synchronise_moments`,
  :func:`moments_replaced`): synchronised batch norm that is not saved in the config;
- the trainer's symbolic build (:func:`can_build_symbolically`, :func:`symbolic_build`,
  :func:`skip_symbolic_build`): building the training state under a multi-worker strategy;
- a strategy's multi-worker mode (:func:`in_multi_worker_mode`);
- an optimizer's variable order and Adam's slots (:func:`variable_index`,
  :func:`adam_slots`) and its weight-decay step (:class:`GroupedWeightDecay`);
- a compiled model's compile arguments (:func:`compile_arguments`).

Each one has a test in ``tests/models/test_surgery.py`` that fails when a Keras or
TensorFlow upgrade changes the internal it relies on; nothing else in kseg
touches a private attribute of a Keras or TensorFlow object.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- functional graphs


def inbound_nodes(layer) -> list:
    """The nodes (calls) of ``layer`` in the graphs it belongs to, oldest first: each node's
    ``input_tensors`` are what that call received. (``Operation._inbound_nodes``.)"""
    return list(layer._inbound_nodes)


def keras_history(tensor) -> tuple:
    """``(operation, node_index, tensor_index)`` of a symbolic Keras tensor: the layer that made it, which
    of that layer's calls, and which of the call's outputs it is. (``KerasTensor._keras_history``.)"""
    history = tensor._keras_history
    return history.operation, history.node_index, history.tensor_index


# --------------------------------------------------------------------------- batch normalisation


def synchronise_moments(layer) -> bool:
    """Make BatchNormalization ``layer`` compute its training moments over every replica's batch.

    Replaces the layer's moments step (``BatchNormalization._moments``) on this
    instance only, so the layer's config stays that of an ordinary layer (a
    ``synchronized=True`` config loads under TensorFlow only). A masked call keeps
    Keras's own step. Returns False, changing nothing, where this Keras has no such step.
    """
    from keras import ops

    original = getattr(layer, "_moments", None)
    if original is None or not hasattr(layer, "_reduction_axes"):
        return False

    def moments(inputs, mask):
        if mask is not None:
            return original(inputs, mask)
        return ops.moments(inputs, axes=layer._reduction_axes, synchronized=True)

    layer._moments = moments
    return True


def moments_replaced(layer) -> bool:
    """True once :func:`synchronise_moments` replaced ``layer``'s moments step."""
    return "_moments" in vars(layer)


# --------------------------------------------------------------------------- training under a strategy


def can_build_symbolically(model) -> bool:
    """Whether this Keras builds a compiled model's training state symbolically (``Trainer._symbolic_build``,
    which ``fit`` / ``evaluate`` call through ``Trainer._maybe_symbolic_build`` under a strategy)."""
    return hasattr(model, "_symbolic_build") and hasattr(model, "_maybe_symbolic_build")


def symbolic_build(model, element_spec) -> None:
    """Create compiled ``model``'s optimizer, loss and metric variables from a dataset's ``element_spec``
    (no data read). Call it in the strategy's scope."""
    model._symbolic_build(data_batch=element_spec)


def skip_symbolic_build(model) -> None:
    """Turn off the symbolic build that ``fit`` / ``evaluate`` run under a strategy, for ``model`` only
    (after :func:`symbolic_build` made that state)."""
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def in_multi_worker_mode(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy whose cluster has more than one worker
    (``CollectiveAllReduceExtended._in_multi_worker_mode``)."""
    return bool(strategy.extended._in_multi_worker_mode())


# --------------------------------------------------------------------------- optimizers


def variable_index(optimizer, variable) -> int:
    """The position of ``variable`` in a built optimizer's variable list: the index of its slots
    (``BaseOptimizer._get_variable_index``)."""
    return optimizer._get_variable_index(variable)


def adam_slots(optimizer, variable) -> tuple:
    """``(first moment, second moment)`` variables of ``variable`` in a built Keras Adam / AdamW
    (``Adam._momentums`` / ``Adam._velocities``)."""
    index = variable_index(optimizer, variable)
    return optimizer._momentums[index], optimizer._velocities[index]


class GroupedWeightDecay:
    """Optimizer mixin: Keras's decoupled weight decay (``w -= w * weight_decay * lr``), with a factor per
    group of variables.

    ``weight_decay_groups(variables)`` returns ``{factor: [variables]}`` or None (Keras's
    decay, unchanged); each group is then decayed with ``weight_decay * factor``.
    Keras applies the decay in the optimizer's ``_apply_weight_decay(variables)`` step,
    which this overrides; ``weight_decay`` is read when the step is traced, so each
    group's factor is a constant of the traced step. Put the mixin before the Keras
    optimizer class in the bases.
    """

    def weight_decay_groups(self, variables):
        return None

    def _apply_weight_decay(self, variables):
        groups = None if self.weight_decay is None else self.weight_decay_groups(variables)
        if groups is None:
            return super()._apply_weight_decay(variables)
        decay = self.weight_decay
        try:
            for factor, group in groups.items():
                self.weight_decay = decay * factor
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = decay


# --------------------------------------------------------------------------- compiled models


def compile_arguments(model) -> dict | None:
    """The arguments ``model.compile`` was last called with (the same optimizer, loss and metric
    objects), or None for a model never compiled (``Trainer._compile_config``)."""
    config = getattr(model, "_compile_config", None)
    return None if config is None else dict(config.config)
