"""Weights from timm checkpoints (``model.safetensors`` with timm's state-dict names) into kseg models.

kseg's HRNet names each layer that holds weights after timm's module path with ``.`` replaced by ``_``
(see :mod:`kseg.models.hrnet`), so a timm state dict converts by name: for each key ``module.param``,
the Keras layer is ``module.replace(".", "_")``, and

- a ``Conv2d``'s ``weight`` (O, I, kh, kw) is the kernel transposed to (kh, kw, I, O), its ``bias`` the bias;
- a depthwise ``Conv2d``'s (C, 1, kh, kw) becomes (kh, kw, C, 1);
- a ``LayerNorm``'s ``weight`` / ``bias`` are ``gamma`` / ``beta``;
- a ``BatchNorm2d``'s ``weight`` / ``bias`` / ``running_mean`` / ``running_var`` are ``gamma`` / ``beta`` /
  ``moving_mean`` / ``moving_variance`` (``num_batches_tracked`` has no counterpart).

:func:`load_timm_checkpoint` sets every weight of the layers it is given from the file, or changes nothing
and raises a one-line :class:`~kseg.errors.KsegError` naming the file and the first weight it lacks or
whose shape differs. Keys of the checkpoint under ``skip_prefixes`` (timm's classification head) are
ignored; any other key with no kseg layer is an error too (the file is another network).
The file is read with ``safetensors`` (NumPy, no PyTorch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kseg.errors import KsegError

_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def read_safetensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as float32 NumPy arrays (integer ones as they are)."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise KsegError(f"{path}: no such weights file")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001  (safetensors raises its own SafetensorError and OSError)
        raise KsegError(f"{path}: not a readable .safetensors file ({type(err).__name__}: {err})") from None
    return _float32(tensors)


def _float32(tensors: dict) -> dict[str, np.ndarray]:
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in tensors.items()}


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file, or a PyTorch ``.bin`` / ``.pth`` state dict (read without PyTorch), told apart by
    their first bytes (a zip archive or a pickle is PyTorch's); floating tensors as float32."""
    try:
        with open(path, "rb") as f:
            start = f.read(2)
    except OSError:
        start = b""
    if start[:2] == b"PK" or start[:1] == b"\x80":
        from kseg.detection.torch_pickle import read_state_dict

        return _float32(read_state_dict(path))
    return read_safetensors(path)


def _value(layer, param: str, tensor: np.ndarray) -> tuple[str, np.ndarray]:
    """The Keras variable name and value for PyTorch's ``param`` of ``layer``."""
    kind = layer.__class__.__name__
    if kind.endswith("BatchNormalization") or kind == "LayerNormalization":
        if param not in _BN or (kind == "LayerNormalization" and param.startswith("running")):
            raise KeyError(param)
        return _BN[param], tensor
    if param == "weight" and kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return "kernel", tensor.transpose(2, 3, 0, 1)
    if param == "weight":
        return "kernel", tensor.transpose(2, 3, 1, 0) if tensor.ndim == 4 else tensor.T
    if param == "bias":
        return "bias", tensor
    raise KeyError(param)


def convert(layers_, state: dict[str, np.ndarray], source: str, skip_prefixes=()) -> dict:
    """``{variable: value}`` for every weight of ``layers_`` from the timm ``state`` dict; errors name
    ``source`` (the file)."""
    by_name = {layer.name: layer for layer in layers_}
    values: dict = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked" or key.startswith(tuple(skip_prefixes)):
            continue
        layer = by_name.get(module.replace(".", "_"))
        if layer is None:
            raise KsegError(f"{source}: {key} has no layer in the kseg model (is the file another network?)")
        try:
            name, value = _value(layer, param, tensor)
        except KeyError:
            raise KsegError(f"{source}: {key}: kseg's layer {layer.name} has no such weight") from None
        variable = next((v for v in layer.weights if v.name == name), None)
        if variable is None or tuple(variable.shape) != value.shape:
            have = "none" if variable is None else tuple(variable.shape)
            raise KsegError(f"{source}: {key} has shape {value.shape}, kseg's {layer.name}/{name} {have} "
                            f"(another variant of the network?)")
        values[id(variable)] = (variable, value)
    missing = [f"{layer.name}/{v.name}" for layer in layers_ for v in layer.weights if id(v) not in values]
    if missing:
        raise KsegError(f"{source}: has no weights for {missing[0]} ({len(missing)} kseg weights missing; "
                        f"another variant of the network?)")
    return values


def assign_state(layers_, state: dict, source: str, skip_prefixes=()) -> None:
    """Set every weight of ``layers_`` from the state dict ``state`` (:func:`convert`; all or nothing)."""
    for variable, value in convert(layers_, state, source, skip_prefixes).values():
        variable.assign(value)


def load_timm_checkpoint(layers_, path, skip_prefixes=()) -> None:
    """Set every weight of ``layers_`` from timm's checkpoint at ``path`` (all or nothing)."""
    assign_state(layers_, read_safetensors(path), str(path), skip_prefixes)
