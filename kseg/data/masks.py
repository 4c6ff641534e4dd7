"""Mask images: decoding every mask format once, colour codes, lookup tables, :func:`read_mask`.

A mask is read once into a :class:`_Raw`: its distinct pixel values (class ids,
or RGB colour codes ``r << 16 | g << 8 | b``), their pixel counts and an index
map. The loader (:mod:`kseg.data.folder`) decides from the values of all masks
what they mean; :func:`read_mask` reads one mask on its own.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kseg.errors import KsegError


@dataclass
class _Raw:
    """One mask read once: ``keys[idx]`` is its pixel values (class ids, or RGB colour codes)."""

    path: Path
    kind: str  # "ids" (indexed, greyscale, 1-bit, 16-bit) or "rgb" (colour codes r << 16 | g << 8 | b)
    mode: str  # PIL's mode
    keys: np.ndarray  # sorted values (may include values with count 0)
    counts: np.ndarray  # pixels per key
    idx: np.ndarray  # (H, W) index into keys
    palette: np.ndarray | None = None  # (n, 3) embedded palette of an indexed PNG

    @property
    def shape(self):
        return self.idx.shape

    def present(self) -> np.ndarray:
        return self.keys[self.counts > 0]


def _code(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)


def _rgb(code: int) -> tuple[int, int, int]:
    code = int(code)
    return code >> 16 & 255, code >> 8 & 255, code & 255


def _read_raw(path) -> _Raw:
    """Decode one mask: class ids for indexed/greyscale/1-bit/16-bit images, colour codes for RGB(A).

    Fully transparent pixels of RGBA/LA masks read as black / 0; otherwise alpha is ignored.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    palette = None
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "PA"):
                a = np.asarray(im)
                arr = a[..., 0] if a.ndim == 3 else a
                pal = im.getpalette() or []
                palette = np.array(pal[: len(pal) // 3 * 3], np.uint8).reshape(-1, 3)
            elif mode in ("L", "1"):
                arr = np.asarray(im).astype(np.uint8)
            elif mode == "LA":
                a = np.asarray(im)
                arr = np.where(a[..., 1] == 0, 0, a[..., 0]).astype(np.uint8)
            elif mode.startswith("I"):  # 16- and 32-bit greyscale: class ids
                arr = np.asarray(im).astype(np.int64)
            elif mode == "F":
                arr = np.asarray(im)
                if not np.array_equal(arr, np.round(arr)):
                    raise KsegError(f"{path}: a floating-point mask with fractional values; save class ids "
                                    f"as an 8- or 16-bit PNG")
                arr = arr.astype(np.int64)
            elif mode == "RGBA":
                a = np.array(im)
                arr = np.where(a[..., 3:] == 0, 0, a[..., :3]).astype(np.uint8)
            else:
                arr = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise KsegError(f"{path}: not a readable mask image ({type(err).__name__})") from None
    if arr.ndim == 3:
        keys, counts, idx = _factorize(_code(arr))
        return _Raw(path, "rgb", mode, keys, counts, idx)
    if arr.dtype == np.uint8:
        return _Raw(path, "ids", mode, np.arange(256), np.bincount(arr.ravel(), minlength=256), arr, palette)
    if arr.size and int(arr.min()) < 0:
        raise KsegError(f"{path}: negative value {int(arr.min())} in the mask; class ids are 0 or more")
    keys, counts, idx = _factorize(arr)
    return _Raw(path, "ids", mode, keys, counts, idx, palette)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sorted distinct values, their counts, index map)`` of a 2-D array (``keys[idx] == values``).

    The distinct values of a sample are looked up first and only the pixels not
    among them are sorted: a mask holds few values, so this is much faster than
    ``np.unique(..., return_inverse=True)`` over every pixel.
    """
    flat = values.ravel()
    keys = np.unique(flat[:: max(1, flat.size // 4096)])
    pos = np.minimum(np.searchsorted(keys, flat), len(keys) - 1)
    miss = keys[pos] != flat
    if miss.any():
        keys = np.union1d(keys, flat[miss])
        pos = np.searchsorted(keys, flat)
    n = len(keys)
    idx = pos.astype(np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.int32).reshape(values.shape)
    return keys, np.bincount(pos, minlength=n), idx


def _grey(raw: _Raw) -> _Raw:
    """An RGB mask whose colours are all grey, as greyscale ids."""
    return _Raw(raw.path, "ids", raw.mode, raw.keys & 255, raw.counts, raw.idx)


def _is_grey(raw: _Raw) -> bool:
    k = raw.present()
    return bool(((k >> 16 & 255) == (k & 255)).all() and ((k >> 8 & 255) == (k & 255)).all())


def _apply(raw: _Raw, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-key labels of ``raw`` from a sorted value table (values not in the table: -1)."""
    out = np.full(len(raw.keys), -1, np.int16)
    if len(values):
        pos = np.clip(np.searchsorted(values, raw.keys), 0, len(values) - 1)
        hit = values[pos] == raw.keys
        out[hit] = labels[pos[hit]]
    return out


def _palette_table(path, colors, ignore_colors) -> tuple[np.ndarray, np.ndarray]:
    cols = np.asarray(colors, np.uint8).reshape(-1, 3)
    ign = np.asarray(ignore_colors if ignore_colors is not None else np.zeros((0, 3)), np.uint8).reshape(-1, 3)
    keys = np.concatenate([_code(cols), _code(ign)])
    vals = np.concatenate([np.arange(len(cols)), -np.ones(len(ign), np.int64)]).astype(np.int16)
    order = np.argsort(keys)
    return keys[order], vals[order]


def _check_in_palette(raw: _Raw, values: np.ndarray, palette_name: str) -> None:
    pres = raw.counts > 0
    pos = np.clip(np.searchsorted(values, raw.keys), 0, len(values) - 1)
    miss = pres & (values[pos] != raw.keys)
    if miss.any():
        counts = raw.counts[miss]
        rgb = _rgb(raw.keys[miss][np.argmax(counts)])
        raise KsegError(f"{raw.path}: colour {rgb} ({int(counts.max())} pixels) is not in the palette"
                        + (f" ({int(miss.sum())} unknown colours in all)" if miss.sum() > 1 else "")
                        + f"; add it to {palette_name} (name it 'ignore' to mark unknown pixels)")


def read_mask(path, num_classes: int | None = None, colors=None, ignore_colors=None,
              ignore_index: int | None = 255) -> np.ndarray:
    """Read one mask on its own as int16 class ids with -1 for unknown.

    Indexed, greyscale, 1-bit and 16-bit masks hold class ids (``ignore_index`` =
    unknown); RGB masks are looked up in ``colors`` (row i = class i) and
    ``ignore_colors`` (a greyscale mask saved as RGB reads as greyscale when
    there are no ``colors``). Raises :class:`KsegError` for unreadable files,
    colours not in the palette and ids outside ``[0, num_classes)``.
    :func:`folder` reads whole folders (and infers binary masks and palettes).
    """
    raw = _read_raw(path)
    if raw.kind == "rgb" and colors is None and _is_grey(raw):
        raw = _grey(raw)
    if raw.kind == "rgb":
        if colors is None:
            raise KsegError(f"{raw.path}: an RGB mask needs a palette: write palette.json (or palette.txt) in "
                            f"the dataset folder (or pass --palette), or save masks as indexed/greyscale PNGs")
        values, labels = _palette_table(path, colors, ignore_colors)
        _check_in_palette(raw, values, "the palette file")
        return _apply(raw, values, labels)[raw.idx]
    lab = raw.keys.astype(np.int64)
    if ignore_index is not None:
        lab = np.where(lab == ignore_index, -1, lab)
    if num_classes is not None:
        bad = (lab >= num_classes) & (raw.counts > 0)
        if bad.any():
            v = int(lab[bad].max())
            raise KsegError(f"{raw.path}: class id {v} is outside the {num_classes} classes (0..{num_classes - 1}"
                            + (f", {ignore_index} = unknown)" if ignore_index is not None else ")"))
    return np.maximum(lab, -1).astype(np.int16)[raw.idx]


def _read_all(paths) -> list[_Raw]:
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1, 8))) as pool:
        return list(pool.map(_read_raw, paths))  # raises the first failing file's error, in order


def _totals(raws: list[_Raw]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values over all masks (sorted) and their pixel counts."""
    keys = np.concatenate([r.keys[r.counts > 0] for r in raws])
    counts = np.concatenate([r.counts[r.counts > 0] for r in raws])
    values, inv = np.unique(keys, return_inverse=True)
    return values, np.bincount(inv, weights=counts, minlength=len(values)).astype(np.int64)


def _embedded_colors(raws: list[_Raw], class_values) -> np.ndarray | None:
    """Colours of the classes in the indexed masks' own palette, or None when that palette is no help
    (not all masks indexed, palettes that differ, too short, a plain grey ramp or repeated colours)."""
    if not raws or any(r.mode not in ("P", "PA") or r.palette is None for r in raws):
        return None
    class_values = np.asarray(class_values, np.int64)
    pal = raws[0].palette
    if not len(class_values) or class_values.max() >= len(pal):
        return None
    cols = pal[class_values]
    for r in raws[1:]:
        if len(r.palette) <= class_values.max() or not np.array_equal(r.palette[class_values], cols):
            return None
    if np.array_equal(cols, np.repeat(class_values[:, None], 3, 1)) or len(np.unique(_code(cols))) < len(cols):
        return None
    return cols.astype(np.uint8)
