"""Which layers of a built model are its encoder: :func:`encoder_layers`.

A kseg model's encoder is the backbone it was built on: every layer between the
image input and the feature maps the backbone returned. Each backbone module
declares the names of the layers that return those feature maps
(:func:`declare_encoder_ends`, regular expressions matched against the whole name);
the encoder is those layers and every layer they are computed from. Layer names
are part of a model's graph, so the encoder is found the same way in a model just
built (frozen or not), in one loaded from a ``.keras`` file (one saved by an older
kseg too) and in its copies (:func:`kseg.models.with_output_stride`,
:func:`kseg.models.layers.float32_copy`). kseg's backbones declare:

- ``plain_block<N>_relu2`` (plain);
- ``relu0``, ``stage<N>_unit1_relu1``, ``relu1`` (the ResNets in classification_models' layout);
- ``<backbone>_encoder`` (a keras.applications network, nested as one sub-model).
"""

from __future__ import annotations

import re

import keras

from kseg.errors import KsegError
from kseg.models import surgery

_ENDS: list[re.Pattern] = []


def declare_encoder_ends(*patterns: str) -> None:
    """Declare the names (regular expressions, each matched against a whole layer name) of the layers
    whose outputs a backbone returns as feature maps."""
    _ENDS.extend(re.compile(p) for p in patterns)


def is_encoder_end(layer) -> bool:
    """True for a layer whose name a backbone declared as one of its feature maps' layers."""
    return any(p.fullmatch(layer.name) for p in _ENDS)


def _producers(model, layer) -> list:
    """The layers of ``model`` whose outputs ``layer`` takes in ``model``'s graph."""
    members = {id(la) for la in model.layers}
    found = []
    for node in surgery.inbound_nodes(layer):
        parents = [surgery.keras_history(t)[0] for t in node.input_tensors]
        if all(id(p) in members for p in parents):  # a call in this model's graph, not in another one
            found.extend(parents)
    return found


def encoder_layers(model) -> list:
    """The layers of ``model`` (a model kseg built, or loaded) that belong to its encoder.

    In ``model.layers`` order, the image input excluded; a nested sub-model (a
    keras.applications encoder) is one layer. Their ``trainable`` flags are not
    read or changed: this is the encoder whether it is frozen or not. Raises
    :class:`~kseg.errors.KsegError` for a model with no layer that a backbone
    declared (see the module's docstring).
    """
    stack = [layer for layer in model.layers if is_encoder_end(layer)]
    if not stack:
        raise KsegError(f"model {model.name!r} has no encoder kseg recognises: none of its layers is named "
                        f"as a kseg backbone's output")
    seen: set[int] = set()
    while stack:
        layer = stack.pop()
        if id(layer) not in seen:
            seen.add(id(layer))
            stack.extend(_producers(model, layer))
    return [la for la in model.layers if id(la) in seen and not isinstance(la, keras.layers.InputLayer)]
