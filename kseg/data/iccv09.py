"""The Stanford Background dataset (iccv09Data): load, with a cache of parsed label maps.

Finding, downloading, extracting and verifying the archive live in
:mod:`kseg.data.iccv09_archive`, the label-text parser in
:mod:`kseg.data.labeltext`, image checks in :mod:`kseg.data.images`; their
public names are importable from here too.

Layout of the official archive::

    iccv09Data/
      images/<id>.jpg
      labels/<id>.regions.txt    8 semantic classes, -1 = unknown
      labels/<id>.surfaces.txt   3 geometric classes, -1 = unknown

Label files are whitespace-separated integer matrices of the image's size.
They are parsed by a vectorised NumPy parser (:func:`parse_label_text`) and
cached as int8 arrays keyed by each source file's name, size and mtime, so a
second run parses nothing and a changed file is parsed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil  # noqa: F401 (kseg.data.iccv09.shutil: tests patch shutil's copy through it)
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.data.iccv09_archive import (ARCHIVE_NAME, CLASS_NAMES, FOLDER_NAME, MASKS, URL,  # noqa: F401
                                      download_archive, extract_archive, find_iccv09, verify_layout)
from kseg.data.images import check_image, image_size, skip_unreadable  # noqa: F401
from kseg.data.labeltext import _parse_pairs, parse_label_text  # noqa: F401
from kseg.errors import KsegError

# Bump when the cache format or the parser's output changes: old caches are rebuilt.
CACHE_VERSION = 2


# --------------------------------------------------------------------------- the dataset


@dataclass
class Iccv09:
    """The dataset as plain values: ids, image paths and label maps (int8, -1 = unknown).

    ``skipped`` lists the image files left out because they could not be decoded.
    """

    root: Path
    mask: str
    ids: list[str]
    image_paths: list[str]
    labels: list[np.ndarray]
    class_names: tuple[str, ...] = field(default=())
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        """One line: where the data is, how many images, the classes (not the label maps)."""
        parts = [f"root={str(self.root)!r}", f"mask={str(self.mask)!r}", f"images={len(self)}",
                 f"classes={list(self.class_names)}"]
        if hasattr(self, "binary"):  # FolderDataset
            parts.append(f"binary={self.binary}")
            colors = getattr(self, "colors", None)
            parts.append(f"colors={'None' if colors is None else len(colors)}")
        if self.skipped:
            parts.append(f"skipped={len(self.skipped)}")
        return f"{type(self).__name__}({', '.join(parts)})"


# --------------------------------------------------------------------------- label files


def read_label_file(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read one label file as int8 (-1 = unknown); values must be < ``num_classes``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KsegError(f"{path}: cannot read label file ({err.strerror})") from None
    arr = _parse_pairs(data)
    if arr is None:
        arr = np.maximum(parse_label_text(data, str(path)), -1).astype(np.int8)
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise KsegError(f"{path}: label value {int(arr.max())} is outside the {num_classes} classes "
                        f"(0..{num_classes - 1}, negative = unknown)")
    return arr


# --------------------------------------------------------------------------- cache


def default_cache_dir(root: Path) -> Path:
    base = Path(os.environ.get("KSEG_CACHE_DIR", Path.home() / ".cache" / "kseg"))
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return base / f"iccv09-{digest}"


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.name}|{st.st_size}|{st.st_mtime_ns}"


def load_labels(paths: list[Path], num_classes: int, cache_file: Path | None) -> tuple[list[np.ndarray], dict]:
    """Load label files through a cache of int8 arrays keyed by (name, size, mtime).

    Returns the arrays and stats ``{"parsed": n, "cached": m}``. Entries whose
    source changed are parsed again; a cache of another version, or an
    unreadable one, is rebuilt. The cache is written under a temporary name and
    renamed, so a kill never leaves a half-written cache.
    """
    keys = [_file_key(p) for p in paths]
    cached: dict[str, np.ndarray] = {}
    if cache_file is not None and cache_file.exists():
        cached = _read_cache(cache_file)
    missing = [i for i, k in enumerate(keys) if k not in cached]
    # one thread: the parser is a few short NumPy passes per file, and a thread pool measured slower (GIL)
    fresh = {i: read_label_file(paths[i], num_classes) for i in missing}
    out = [fresh[i] if i in fresh else cached[k] for i, k in enumerate(keys)]
    parsed = len(missing)
    if cache_file is not None and (parsed or len(cached) != len(keys)):
        _write_cache(cache_file, keys, out)
    return out, {"parsed": parsed, "cached": len(paths) - parsed}


_MAGIC = b"KSEGLBL\0"


def _kseg_version() -> str:
    """The kseg version that writes (and alone trusts) a label cache."""
    import kseg

    return kseg.__version__


def _read_cache(cache_file: Path) -> dict[str, np.ndarray]:
    """Entries of a label cache file; {} for a missing, foreign, damaged or other-version file."""
    try:
        data = cache_file.read_bytes()
        if data[:8] != _MAGIC:
            return {}
        hlen = int.from_bytes(data[8:16], "little")
        header = json.loads(data[16:16 + hlen])
        if header.get("version") != CACHE_VERSION or header.get("kseg") != _kseg_version():
            return {}
        keys, offsets, shapes = header["keys"], header["offsets"], header["shapes"]
        flat = np.frombuffer(data, dtype=np.int8, offset=16 + hlen)
    except (OSError, ValueError, KeyError, TypeError):  # a broken cache is rebuilt, never trusted
        return {}
    if len(offsets) != len(keys) + 1 or len(shapes) != len(keys) or offsets[-1] != flat.size:
        return {}
    try:
        return {k: flat[offsets[i]:offsets[i + 1]].reshape(shapes[i]) for i, k in enumerate(keys)}
    except ValueError:
        return {}


def _write_cache(cache_file: Path, keys: list[str], arrays: list[np.ndarray]) -> None:
    """Write the cache under a temporary name, then rename it into place."""
    tmp = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(int).tolist()
        header = json.dumps({"version": CACHE_VERSION, "kseg": _kseg_version(), "keys": keys, "offsets": offsets,
                             "shapes": [list(a.shape) for a in arrays]}).encode()
        fd, tmp = tempfile.mkstemp(prefix=cache_file.name + ".", suffix=".tmp", dir=cache_file.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + len(header).to_bytes(8, "little") + header)
            for a in arrays:
                f.write(memoryview(np.ascontiguousarray(a, dtype=np.int8)).cast("B"))
        os.replace(tmp, cache_file)
    except OSError as err:  # a cache we cannot write only costs time next run
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        print(f"kseg: warning: {cache_file}: cannot write label cache ({err.strerror})", file=sys.stderr)


# --------------------------------------------------------------------------- loading


def load_iccv09(data: str | os.PathLike | None = None, mask: str = "surfaces",
                cache_dir: str | os.PathLike | None = None, limit: int | None = None,
                quiet: bool = True, check_sizes: bool = True) -> Iccv09:
    """Find the dataset and load ``mask`` labels (``"regions"`` or ``"surfaces"``).

    ``data``: a folder or archive (see :func:`find_iccv09`). ``limit``: keep only
    the first N ids (sorted), for quick experiments and tests. Labels are int8
    arrays at the image's own size with -1 for unknown pixels.
    """
    if mask not in CLASS_NAMES:
        raise KsegError(f"unknown mask {mask!r}: choose one of {', '.join(MASKS)}")
    root = find_iccv09(data, quiet=quiet)
    ids = verify_layout(root, mask)
    if limit is not None:
        ids = ids[: int(limit)]
    image_paths = [str(root / "images" / f"{i}.jpg") for i in ids]
    label_paths = [root / "labels" / f"{i}.{mask}.txt" for i in ids]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    cache_file = cache / f"{mask}-labels.bin" if limit is None else cache / f"{mask}-labels-{limit}.bin"
    labels, _ = load_labels(label_paths, len(CLASS_NAMES[mask]), cache_file)
    skipped = []
    if check_sizes:
        # an image that does not decode is left out (with a warning naming it), not a crash mid-training
        sizes, skipped, image_paths, labels, label_paths, ids = skip_unreadable(image_paths, labels,
                                                                                 label_paths, ids)
        for hw, img, lab, lp in zip(sizes, image_paths, labels, label_paths):
            if tuple(lab.shape) != hw:
                raise KsegError(f"{lp}: label is {lab.shape[1]}x{lab.shape[0]} (WxH) but its image "
                                f"{Path(img).name} is {hw[1]}x{hw[0]}")
    return Iccv09(root=root, mask=mask, ids=ids, image_paths=image_paths, labels=labels,
                  class_names=CLASS_NAMES[mask], skipped=skipped)
