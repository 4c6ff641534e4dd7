"""A test-only ``torch.save`` writer (zip format) without torch: the layout kseg.detection.torch_pickle reads.

``archive/data.pkl`` pickles the state dict; each tensor reduces to ``torch._utils._rebuild_tensor_v2(storage, 0,
shape, stride, False, OrderedDict())`` with the storage a persistent id ``('storage', torch.<Type>Storage, key,
'cpu', numel)``; ``archive/data/<key>`` holds the storage's raw little-endian bytes."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np

from kseg.detection.torch_pickle import _DTYPES

_STORAGE = {np.dtype(v).str: k for k, v in _DTYPES.items() if v != "bfloat16"}


class _Ref:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


def write_torch_zip(path, state: dict) -> None:
    """Write ``state`` ({name: array}) as torch's zip checkpoint at ``path``."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # only its name is pickled
        raise NotImplementedError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in set(_STORAGE.values()):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    blobs = {}

    class Tensor:
        def __init__(self, arr):
            self.arr = np.array(arr, order="C")  # (ascontiguousarray would make a 0-d array 1-d)

        def __reduce__(self):
            key = str(len(blobs))
            blobs[key] = self.arr.astype(self.arr.dtype.newbyteorder("<")).tobytes()
            stride = tuple(s // self.arr.itemsize for s in self.arr.strides)
            ref = _Ref(getattr(torch, _STORAGE[self.arr.dtype.newbyteorder("<").str]), key, self.arr.size)
            return _rebuild_tensor_v2, (ref, 0, self.arr.shape, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel) if isinstance(obj, _Ref) else None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(collections.OrderedDict((k, Tensor(np.asarray(v))) for k, v in state.items()))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, raw in blobs.items():
            z.writestr(f"archive/data/{key}", raw)
