"""segmentation_models' model utilities (``sm.utils``): ``set_regularization``, ``set_trainable``."""

from __future__ import annotations

import keras

_REGULARIZERS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "beta_regularizer",
                 "gamma_regularizer")


def _set_in_config(layer_configs, given):
    """Put the given regularizers into every layer config that takes them, nested models included.

    A layer takes a regularizer when its config has that key (Conv, Dense: kernel and bias;
    BatchNormalization: beta and gamma); ``activity_regularizer`` goes to the layers with a
    kernel (and to any whose config already has one).
    """
    for item in layer_configs:
        config = item.get("config", {})
        if isinstance(config.get("layers"), list):  # a nested functional / sequential model
            _set_in_config(config["layers"], given)
            continue
        for key, value in given.items():
            takes = key in config or (key == "activity_regularizer" and "kernel_regularizer" in config)
            if takes:
                config[key] = keras.regularizers.serialize(value)


def set_regularization(model, kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                       beta_regularizer=None, gamma_regularizer=None, **kwargs):
    """A copy of ``model`` with the given regularizers set on every layer that takes them.

    As segmentation_models: the model is rebuilt from its updated config (so the returned
    model's config, and a saved copy of it, carry the regularizers) and given ``model``'s
    weights; ``model`` itself is left as it was. The regularization terms appear in the
    returned model's ``losses`` and are added to the training loss. The copy is not compiled.
    """
    given = {key: keras.regularizers.get(value) for key, value in zip(
        _REGULARIZERS, (kernel_regularizer, bias_regularizer, activity_regularizer, beta_regularizer,
                        gamma_regularizer)) if value is not None}
    config = model.get_config()
    _set_in_config(config.get("layers", []), given)
    out = model.__class__.from_config(config)
    out.set_weights(model.get_weights())
    return out


def set_trainable(model, recompile=True, **kwargs):
    """Make every layer of ``model`` trainable (after ``encoder_freeze=True``) and, if ``recompile``
    and the model was compiled, compile it again with the same optimizer, loss, loss weights and
    metrics, so that the next ``fit`` trains the unfrozen layers."""
    for layer in model.layers:
        layer.trainable = True
    from kseg.models.surgery import compile_arguments

    arguments = compile_arguments(model)
    if recompile and getattr(model, "compiled", False) and arguments is not None:
        model.compile(**arguments)
