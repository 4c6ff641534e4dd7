"""Training precision: float32 (the default) or Keras's ``mixed_bfloat16`` policy.

Under ``mixed_bfloat16`` layers compute in bfloat16 while their weights stay float32, and kseg's
models keep their last layer (class scores and softmax) in float32 (DESIGN.md). Where the CPU has
bfloat16 instructions (``avx512_bf16`` or AMX among /proc/cpuinfo's flags: Intel Sapphire Rapids and
later, AMD Zen 4 and later) or on a recent GPU that is faster: about 1.3x for kseg's training step and
1.6x for inference on a 2-core AVX512_BF16 CPU (README, Performance). Elsewhere TensorFlow emulates
bfloat16 and it is several times slower, so kseg warns. What kseg evaluates, predicts with and
exports is always the model's float32 copy (:func:`kseg.models.layers.float32_copy`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PRECISIONS = ("float32", "mixed_bfloat16")


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively: ``avx512_bf16`` or AMX (``amx_bf16``) among its flags.

    ``cpuinfo`` is /proc/cpuinfo's text (read when None; False where it cannot be read).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def warning(precision: str, gpus: int = 0, cpuinfo: str | None = None) -> str | None:
    """A one-line warning when ``precision`` will be slow here (bfloat16 on a CPU that emulates it), else None."""
    if precision == "mixed_bfloat16" and not gpus and not native_bf16(cpuinfo):
        return ("kseg: warning: --precision mixed_bfloat16 on a CPU without bfloat16 instructions (no avx512_bf16 "
                "or amx_bf16 in /proc/cpuinfo): TensorFlow emulates them and training is several times slower "
                "than float32")
    return None


@contextlib.contextmanager
def policy(precision: str):
    """Keras's global dtype policy set to ``precision`` inside the block, restored after it."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
