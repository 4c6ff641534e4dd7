"""Read a PyTorch checkpoint (``.pth``) into NumPy arrays without PyTorch.

``read_state_dict(path)`` returns ``{name: np.ndarray}`` for a file written by ``torch.save``
of a state dict (or of a dict holding one under ``"model"`` / ``"state_dict"``), in either
of torch's formats: the zip archive (``data.pkl`` + ``data/<key>``, torch >= 1.6) and the
legacy stream (magic number, protocol, system info, the pickle, the storage keys, then each
storage as an int64 element count and its bytes; torchvision's older ``download.pytorch.org``
files). The pickle is read with an unpickler that knows only the few globals a state dict
needs (tensor rebuilds, storage types, ``OrderedDict``); anything else is refused, so a
checkpoint cannot run code. Tensors come out contiguous, in the checkpoint's dtype
(bfloat16 as float32).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from kseg.errors import KsegError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
           "ByteStorage": np.uint8, "BoolStorage": np.bool_, "BFloat16Storage": "bfloat16"}


class _StorageType:
    def __init__(self, name):
        self.dtype = _DTYPES[name]

    def decode(self, raw: bytes, numel: int) -> np.ndarray:
        if self.dtype == "bfloat16":
            return (np.frombuffer(raw, "<u2", numel).astype(np.uint32) << 16).view(np.float32)
        return np.frombuffer(raw, np.dtype(self.dtype).newbyteorder("<"), numel)


def _rebuild_tensor(storage, offset, size, stride, *_):
    if isinstance(storage, _Lazy):  # a legacy file: the bytes come later
        return _Deferred(storage, offset, size, stride)
    return _strided(storage, offset, size, stride)


def _strided(storage, offset, size, stride):
    if not size:
        return storage[offset].copy()
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride), writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_):
    return data


def _rebuild_from_type(func, _type, args, _state):
    return func(*args)


_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
            ("collections", "OrderedDict"): collections.OrderedDict}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"a state dict does not hold {module}.{name}")

    def persistent_load(self, saved_id):
        return self._load_storage(saved_id)


def _from_zip(path) -> object:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next(n for n in names if n.endswith("data.pkl"))
        root = pkl[: -len("data.pkl")]

        def load_storage(saved_id):
            _, storage_type, key, _location, numel = saved_id[:5]
            return storage_type.decode(archive.read(f"{root}data/{key}"), numel)

        with archive.open(pkl) as f:
            return _Unpickler(f, load_storage).load()


def _from_legacy(path) -> object:
    with open(path, "rb") as f:
        data = f.read()
    stream = io.BytesIO(data)
    if pickle.load(stream) != _LEGACY_MAGIC:
        raise ValueError("not a torch checkpoint")
    pickle.load(stream)  # protocol version
    pickle.load(stream)  # system info
    pending = {}

    def load_storage(saved_id):
        _, storage_type, key, _location, numel = saved_id[:5]
        pending.setdefault(key, _Lazy(storage_type, numel))
        return pending[key]

    obj = _Unpickler(stream, load_storage).load()
    keys = pickle.load(stream)
    for key in keys:
        (numel,) = struct.unpack("<q", stream.read(8))
        lazy = pending[key]
        lazy.array = lazy.storage_type.decode(stream.read(numel * lazy.itemsize), numel)
    return _resolve(obj)


class _Lazy:
    """A legacy storage: its bytes come after the pickle, so tensors are rebuilt once they are read."""

    def __init__(self, storage_type, numel):
        self.storage_type, self.numel, self.array = storage_type, numel, None
        self.itemsize = 2 if storage_type.dtype == "bfloat16" else np.dtype(storage_type.dtype).itemsize


class _Deferred:
    def __init__(self, lazy, offset, size, stride):
        self.lazy, self.offset, self.size, self.stride = lazy, offset, size, stride


def _resolve(obj):
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, _Deferred):
        return _strided(obj.lazy.array, obj.offset, obj.size, obj.stride)
    return obj


def read_state_dict(path) -> dict[str, np.ndarray]:
    """``{name: array}`` from a ``torch.save`` file at ``path`` (see the module's docstring)."""
    try:
        obj = _from_zip(path) if zipfile.is_zipfile(path) else _from_legacy(path)
    except (OSError, ValueError, EOFError, KeyError, StopIteration, pickle.UnpicklingError, struct.error) as exc:
        raise KsegError(f"{path}: not a PyTorch checkpoint kseg can read ({exc})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise KsegError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {k: np.asarray(v) for k, v in obj.items() if isinstance(v, np.ndarray) or np.isscalar(v)}
