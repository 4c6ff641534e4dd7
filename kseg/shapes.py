"""The size rule of kseg's models: height and width are positive multiples of 32.

Every encoder halves its input five times, so an input whose height or width is
not a multiple of :data:`MULTIPLE` cannot be restored exactly by the decoder.
Training sizes are checked (:func:`check_size`), model input shapes are checked
(:func:`check_multiple`), and images of any size are resized to the nearest
valid size for inference (:func:`nearest_multiple`).
"""

from __future__ import annotations

import numpy as np

from kseg.errors import KsegError

MULTIPLE = 32


class SizeError(KsegError, ValueError):
    """A height or width that is not a positive multiple of 32."""


def nearest_multiples(v: int) -> str:
    """The valid sizes around ``v``, as a hint: ``"224 or 256"`` (one value when ``v`` is valid)."""
    lo = max(MULTIPLE, (v // MULTIPLE) * MULTIPLE)
    hi = lo + MULTIPLE if lo < v else lo
    return f"{lo} or {hi}" if lo != hi else str(lo)


def check_multiple(v: int, what: str = "size") -> int:
    """``v`` if it is a positive multiple of 32; else :class:`SizeError` naming ``what`` and the nearest sizes."""
    v = int(v)
    if v <= 0 or v % MULTIPLE:
        raise SizeError(f"{what} {v} is not a multiple of {MULTIPLE}: use {nearest_multiples(v)}")
    return v


def check_size(size) -> tuple[int, int]:
    """Normalise ``size`` (int, "H", "HxW", (H, W)) to (H, W), each a multiple of 32.

    Raises :class:`KsegError` (a ``ValueError``) naming the nearest valid sizes.
    """
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        try:
            vals = [int(p) for p in parts if p.strip()]
        except ValueError:
            raise SizeError(f"bad size {size!r}: give H or HxW, e.g. 224 or 256x320") from None
    elif isinstance(size, (int, np.integer)):
        vals = [int(size)]
    else:
        vals = [int(v) for v in size]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise SizeError(f"bad size {size!r}: give H or HxW, e.g. 224 or 256x320")
    for v in vals:
        check_multiple(v)
    return vals[0], vals[1]


def nearest_multiple(v, multiple: int = MULTIPLE):
    """The multiple of 32 nearest to ``v`` (at least 32); works on ints and on TF scalars."""
    if isinstance(v, (int, float)):
        return max(multiple, int(round(v / multiple)) * multiple)
    import tensorflow as tf

    v = tf.cast(v, tf.float32)
    return tf.maximum(multiple, tf.cast(tf.round(v / multiple), tf.int32) * multiple)


def fixed_input_size(model) -> tuple[int, int] | None:
    """The model's (H, W) if its input has a fixed size, else None."""
    shape = model.inputs[0].shape
    h, w = shape[1], shape[2]
    return (int(h), int(w)) if h and w else None
