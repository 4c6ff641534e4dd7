"""The user's own data: a folder of images and a folder of masks.

Layout (names are matched by stem; a mask may add a suffix such as ``_mask``)::

    my_data/
      images/  a.jpg  b.png ...          any of .jpg .jpeg .png .bmp .gif
      masks/   a.png  b.png ...          .png .bmp .gif .tif(f): never JPEG (lossy)
      palette.json or palette.txt        optional: class names and colours
      classes.txt                        optional: one class name a line

Masks are either

- id masks: indexed ("P"), greyscale ("L"), 1-bit ("1") or 16-bit PNGs (or an RGB
  PNG whose pixels are all grey) whose pixel values are class ids
  (``ignore_index``, 255 by default, marks unknown pixels). An indexed PNG's own
  palette colours the classes when drawing, unless there is a palette file; or
- RGB(A) PNGs whose colours are looked up in a palette file: JSON
  (``{"sky": [70, 130, 180], ...}`` or ``[{"name": "sky", "color": [70, 130, 180]}, ...]``)
  or text, one class a line (``sky 70 130 180``, ``70 130 180 sky`` or ``sky #4682b4``).
  A palette entry named ``ignore``, ``void``, ``unknown`` or ``unlabeled`` marks unknown
  pixels and is not a class. Without a palette file, the colours found in the masks
  (at most ``MAX_AUTO_COLORS``) are the classes, in colour-code order (black first).
  Fully transparent pixels read as black.

Binary masks: without class names, id masks that hold two values ``{0, k}`` over
the whole folder (0/255, 0/1, 0/128, a 1-bit PNG; plus the ignore value) are a
binary dataset: 0 = background, k = foreground (for exactly ``{0, 255}``, 255 is the
foreground, not "unknown"). Any dataset of exactly two classes (two names in
classes.txt or a palette file, two colours) is binary too: ``FolderDataset.binary``
is True, class 0 is the background and class 1 the foreground.

What the loader infers it says in one line (``FolderDataset.notes``, printed as
``kseg: ...``), and it warns (``kseg: warning: ...``) about class ids beyond the
class names (read as unknown), ids that never appear below the largest one, named
classes that never appear and classes with fewer than ``RARE_PIXELS`` pixels.

:func:`folder` returns the same kind of value as :func:`kseg.data.load_iccv09`
(image paths, int8 label maps with -1 for unknown, class names), so
:func:`kseg.data.make_dataset` and the training command use it unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.data.iccv09 import Iccv09, skip_unreadable
from kseg.errors import KsegError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
MASK_EXTS = (".png", ".bmp", ".gif", ".tif", ".tiff")
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "-mask", "_seg", "_segmentation")
IGNORE_NAMES = ("ignore", "void", "unknown", "unlabeled", "unlabelled")
MAX_CLASSES = 127  # label maps are int8
MAX_AUTO_COLORS = 32  # RGB masks without a palette file: more colours than this is not a class palette
RARE_PIXELS = 50
GIVEN = "the class names given"  # a class with fewer pixels than this over all masks is warned about


@dataclass(repr=False)  # Iccv09's one-line repr
class FolderDataset(Iccv09):
    """A user's dataset: :class:`Iccv09`'s fields plus the palette's colours (or None)."""

    colors: np.ndarray | None = None
    binary: bool = False
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- palettes


def read_palette(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read a palette file (JSON or text): ``(class_names, colours (C, 3), ignore_colours (K, 3))``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise KsegError(f"{path}: cannot read palette file ({err.strerror})") from None
    entries = _palette_json(path, text) if text.lstrip().startswith(("{", "[")) else _palette_text(path, text)
    names, colors, ignore = [], [], []
    for name, color in entries:
        if len(color) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in color):
            raise KsegError(f"{path}: class {name!r}: colour {color} is not three integers in 0..255")
        (ignore if name.strip().lower() in IGNORE_NAMES else colors).append(tuple(int(v) for v in color))
        if name.strip().lower() not in IGNORE_NAMES:
            names.append(name)
    if not names:
        raise KsegError(f"{path}: no classes in the palette file")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise KsegError(f"{path}: class {dup!r} appears twice")
    every = colors + ignore
    if len(set(every)) != len(every):
        dup = next(c for c in every if every.count(c) > 1)
        raise KsegError(f"{path}: colour {dup} is given to two classes")
    return names, np.array(colors, np.uint8).reshape(-1, 3), np.array(ignore, np.uint8).reshape(-1, 3)


def _palette_json(path: Path, text: str):
    try:
        data = json.loads(text)
    except ValueError as err:
        raise KsegError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    if isinstance(data, dict):
        return [(str(k), _as_color(path, k, v)) for k, v in data.items()]
    if isinstance(data, list):
        out = []
        for item in data:
            if not (isinstance(item, dict) and "name" in item and ("color" in item or "colour" in item)):
                raise KsegError(f"{path}: each entry needs a name and a color, e.g. "
                                f'{{"name": "sky", "color": [70, 130, 180]}}; got {item!r}')
            out.append((str(item["name"]), _as_color(path, item["name"], item.get("color", item.get("colour")))))
        return out
    raise KsegError(f'{path}: expected {{"name": [r, g, b], ...}} or a list of {{"name", "color"}} entries')


def _as_color(path, name, value):
    if isinstance(value, str):
        return _hex(path, name, value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise KsegError(f"{path}: class {name!r}: colour {value!r} is not [r, g, b] or #rrggbb")


def _hex(path, name, token: str):
    t = token.lstrip("#")
    if len(t) != 6:
        raise KsegError(f"{path}: class {name!r}: colour {token!r} is not #rrggbb")
    try:
        return [int(t[i:i + 2], 16) for i in (0, 2, 4)]
    except ValueError:
        raise KsegError(f"{path}: class {name!r}: colour {token!r} is not #rrggbb") from None


def _is_hex(token: str) -> bool:
    return len(token) == 7 and token[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in token[1:])


def _palette_text(path: Path, text: str):
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or (line.startswith("#") and not _is_hex(line.split()[0])) or line.startswith("//"):
            continue
        tok = line.split()

        def ints(ts):
            try:
                return [int(t) for t in ts]
            except ValueError:
                return None

        if len(tok) >= 4 and ints(tok[:3]) is not None:
            out.append((" ".join(tok[3:]), ints(tok[:3])))
        elif len(tok) >= 4 and ints(tok[-3:]) is not None:
            out.append((" ".join(tok[:-3]), ints(tok[-3:])))
        elif len(tok) >= 2 and _is_hex(tok[0]):
            out.append((" ".join(tok[1:]), _hex(path, tok[1], tok[0])))
        elif len(tok) >= 2 and _is_hex(tok[-1]):
            out.append((" ".join(tok[:-1]), _hex(path, tok[0], tok[-1])))
        else:
            raise KsegError(f"{path}: line {lineno}: expected 'name r g b', 'r g b name' or 'name #rrggbb', "
                            f"got {line!r}")
    return out


def write_palette(path, class_names, colors) -> Path:
    """Write a JSON palette file ``{"name": [r, g, b], ...}`` that :func:`read_palette` reads."""
    path = Path(path)
    data = {str(n): [int(v) for v in c] for n, c in zip(class_names, np.asarray(colors).reshape(-1, 3))}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


# --------------------------------------------------------------------------- masks


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


# --------------------------------------------------------------------------- matching


def _list(folder: Path, exts) -> dict[str, Path]:
    if not folder.is_dir():
        raise KsegError(f"{folder}: no such folder")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in exts}


def _few(names, n=3) -> str:
    names = sorted(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def match_files(images_dir, masks_dir, mask_suffix: str | None = None) -> list[tuple[str, Path, Path]]:
    """Pair images with masks by name: ``[(id, image_path, mask_path), ...]`` sorted by id.

    A mask is ``<image stem><suffix>.<ext>``; with ``mask_suffix=None`` the
    suffix is detected among "", "_mask", "_label", "_gt", ... Raises
    :class:`KsegError` naming unmatched files.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _list(images_dir, IMAGE_EXTS)
    if not images:
        raise KsegError(f"{images_dir}: no images ({', '.join(IMAGE_EXTS)})")
    masks = _list(masks_dir, MASK_EXTS)
    if not masks:
        jpegs = [p.name for p in masks_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")]
        if jpegs:
            raise KsegError(f"{masks_dir}: masks are JPEG ({jpegs[0]}...); JPEG is lossy and blurs class ids "
                            f"and colours: save masks as PNG")
        raise KsegError(f"{masks_dir}: no masks ({', '.join(MASK_EXTS)})")
    suffixes = [mask_suffix] if mask_suffix is not None else list(MASK_SUFFIXES)
    best = max(suffixes, key=lambda s: sum(f"{i}{s}" in masks for i in images))
    pairs, no_mask = [], []
    used = set()
    for ident, img in images.items():
        m = masks.get(f"{ident}{best}")
        if m is None:
            no_mask.append(img.name)
        else:
            pairs.append((ident, img, m))
            used.add(f"{ident}{best}")
    no_image = [masks[k].name for k in masks if k not in used]
    if no_mask:
        hint = f" (expected {masks_dir / (Path(no_mask[0]).stem + best + '.png')})"
        raise KsegError(f"{images_dir}: {len(no_mask)} image(s) without a mask: {_few(no_mask)}{hint}")
    if no_image:
        raise KsegError(f"{masks_dir}: {len(no_image)} mask(s) without an image: {_few(no_image)}")
    return pairs


# --------------------------------------------------------------------------- loading


def _find_one(root: Path, names) -> Path | None:
    for n in names:
        if (root / n).is_file():
            return root / n
    return None


class _Notes(list):
    """The one-line statements and warnings of one load."""

    def say(self, text: str) -> None:
        self.append(text)

    def warn(self, text: str) -> None:
        self.append(f"warning: {text}")


def _ids_text(values) -> str:
    """``[0, 1, 2, 7, 9, 10]`` -> ``"0..2, 7, 9, 10"``."""
    values = sorted(int(v) for v in values)
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(f"{values[i]}..{values[j]}" if j - i >= 2 else ", ".join(str(v) for v in values[i:j + 1]))
        i = j + 1
    return ", ".join(parts)


def _files(paths, n=3) -> str:
    names = sorted({Path(p).name for p in paths})
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _named(src: str, names) -> str:
    """``classes.txt names 3 classes: a, b, c`` or ``3 class names were given: a, b, c``."""
    listed = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    n = len(names)
    if src == GIVEN:
        return f"{n} class name{'s were' if n > 1 else ' was'} given: {listed}"
    return f"{src} names {n} class{'es' if n > 1 else ''}: {listed}"


def _px(n: int) -> str:
    return f"{n} pixel" + ("" if n == 1 else "s")


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


def folder(images_dir, masks_dir=None, class_names=None, palette=None, ignore_index: int | None = 255,
           mask_suffix: str | None = None, limit: int | None = None, binary: bool | None = None,
           quiet: bool = False) -> FolderDataset:
    """Load a user's dataset: images and masks matched by name.

    Args:
        images_dir: the images folder; or a folder holding ``images/`` and
            ``masks/`` (or ``labels/``), when ``masks_dir`` is None.
        masks_dir: the masks folder.
        class_names: a list (or comma-separated string) of names; default: the
            palette file's names, else ``classes.txt`` in the root, else
            ``class0..classN`` from the largest id in the masks.
        palette: a palette file (JSON or text) for RGB masks; default:
            ``palette.json`` or ``palette.txt`` in the root, if there is one.
            RGB masks without one get a palette of the colours they hold.
        ignore_index: the id that marks unknown pixels in id masks (None: none).
        mask_suffix: what a mask's name adds to its image's stem (default: detected).
        limit: keep only the first N pairs (sorted by name).
        binary: None detects binary masks (no class names and two values
            ``{0, k}`` over all masks, or exactly two classes); True insists
            on binary masks; False treats the masks as multi-class.
        quiet: do not print the notes (they are in ``notes`` all the same).

    Returns a :class:`FolderDataset` (an :class:`Iccv09`) whose ``labels`` are
    int8 maps at each image's size with -1 for unknown pixels. What the loader
    infers (binary, a palette, class names) and its warnings are in ``notes``
    and printed on stderr as ``kseg: ...`` / ``kseg: warning: ...``.
    """
    images_dir = Path(images_dir).expanduser()
    root = images_dir
    if masks_dir is None:
        if not images_dir.is_dir():
            raise KsegError(f"{images_dir}: no such folder")
        sub_img = images_dir / "images"
        sub_mask = next((images_dir / n for n in ("masks", "labels", "annotations") if (images_dir / n).is_dir()),
                        None)
        if not sub_img.is_dir() or sub_mask is None:
            raise KsegError(f"{images_dir}: expected images/ and masks/ folders here (or pass masks_dir)")
        images_dir, masks_dir = sub_img, sub_mask
    else:
        masks_dir = Path(masks_dir).expanduser()
        root = images_dir.parent
    if palette is None:
        palette = _find_one(root, ("palette.json", "palette.txt"))
    colors = ignore_colors = None
    pal_names = None
    if palette is not None:
        pal_names, colors, ignore_colors = read_palette(palette)
    if isinstance(class_names, str):
        class_names = [c.strip() for c in class_names.split(",") if c.strip()]
    src = GIVEN if class_names is not None else None
    if class_names is None and pal_names is None:
        classes_file = _find_one(root, ("classes.txt",))
        if classes_file is not None:
            class_names = [ln.strip() for ln in classes_file.read_text().splitlines() if ln.strip()]
            src = classes_file.name
            if not class_names:
                raise KsegError(f"{classes_file}: no class names in it (one name a line)")
    if class_names is not None and pal_names is not None and len(class_names) != len(pal_names):
        raise KsegError(f"{palette}: the palette has {len(pal_names)} classes but {len(class_names)} class "
                        f"names were given")
    if pal_names is not None and src is None:
        src = Path(palette).name
    names = list(class_names) if class_names is not None else pal_names
    if names is not None and len(names) > MAX_CLASSES:
        raise KsegError(f"{len(names)} classes: kseg's label maps hold at most {MAX_CLASSES}")
    if binary is True and names is not None and len(names) > 2:
        raise KsegError(f"binary segmentation needs 2 classes (background, foreground) but {_named(src, names)}")

    pairs = match_files(images_dir, masks_dir, mask_suffix)
    if limit is not None:
        pairs = pairs[: int(limit)]
    # an image that does not decode is left out (with a warning naming it), not a crash mid-training
    sizes, skipped, _, pairs = skip_unreadable([img for _, img, _ in pairs], pairs)
    raws = _read_all([m for _, _, m in pairs])
    for hw, (ident, img, mpath), raw in zip(sizes, pairs, raws):
        if tuple(raw.shape) != hw:
            raise KsegError(f"{mpath}: mask is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image {img.name} "
                            f"is {hw[1]}x{hw[0]}")

    notes = _Notes()
    rgb = [r for r in raws if r.kind == "rgb"]
    if rgb and colors is None and all(_is_grey(r) for r in rgb):  # greyscale masks saved as RGB
        raws = [_grey(r) if r.kind == "rgb" else r for r in raws]
        rgb = []
    ids = [r for r in raws if r.kind == "ids"]
    tables = {}  # kind -> (sorted values, their labels)
    fix = "list the real classes in classes.txt (one name a line), or mark it unknown with --ignore-index"
    hint = {}  # kind -> what to suggest for a rare class
    is_binary = False
    if rgb and ids and colors is None:
        raise KsegError(f"{masks_dir}: {rgb[0].path.name} is a colour (RGB) mask but {ids[0].path.name} holds "
                        f"class ids (indexed/greyscale): save all masks the same way, or map the colours to "
                        f"classes in palette.json")
    if rgb and colors is not None:  # RGB masks looked up in the palette file
        values, labels = _palette_table(palette, colors, ignore_colors)
        for r in rgb:
            _check_in_palette(r, values, Path(palette).name)
        tables["rgb"] = (values, labels)
        hint["rgb"] = f"check those masks, or name the colour 'ignore' in {Path(palette).name}"
    elif rgb:  # RGB masks without a palette file: their colours are the classes
        names, colors, is_binary = _auto_palette(rgb, names, src, binary, masks_dir, tables, notes)
        hint["rgb"] = "a stray colour? map the colours in palette.json and name this one 'ignore'"
    if ids:
        names, is_binary, id_colors = _id_table(ids, names, src, binary, ignore_index, masks_dir, tables, notes,
                                                embedded=colors is None)
        colors = colors if colors is not None else id_colors
        hint["ids"] = fix if src is None and not is_binary else "check those masks"

    if len(names) < 2:
        raise KsegError(f"{_named(src, names)}; one class is nothing to learn: name every class, the "
                        f"background too")
    if binary is not False and len(names) == 2 and not is_binary:
        is_binary = True
        notes.say(f"two classes from {src}: binary segmentation (1 = foreground {names[1]!r}, 0 = background "
                  f"{names[0]!r})")
    elif not is_binary and src is not None and src != GIVEN and not (rgb and palette is None):
        notes.insert(0, f"{len(names)} classes from {src}: {', '.join(names)}")
    labels, present = [], []
    totals = np.zeros(len(names), np.int64)
    for r in raws:
        lut = _apply(r, *tables[r.kind])
        pres = lut[r.counts > 0]
        np.add.at(totals, pres[pres >= 0], r.counts[r.counts > 0][pres >= 0])
        present.append(set(int(v) for v in pres[pres >= 0]))
        labels.append(lut.astype(np.int8)[r.idx])
    _class_warnings(names, totals, present, raws, src, hint, notes)
    if not quiet:
        for note in notes:
            print(f"kseg: {note}", file=sys.stderr)
    return FolderDataset(root=root, mask="folder", ids=[i for i, _, _ in pairs],
                         image_paths=[str(img) for _, img, _ in pairs], labels=labels,
                         class_names=tuple(names), colors=colors, skipped=skipped, binary=is_binary,
                         notes=list(notes))


def _auto_palette(rgb, names, src, binary, masks_dir, tables, notes):
    """Classes of RGB masks without a palette file: the colours found, sorted by colour code."""
    most = max(rgb, key=lambda r: len(r.keys))
    values, counts = _totals(rgb)
    if len(values) > MAX_AUTO_COLORS:
        raise KsegError(f"{most.path}: {len(most.keys)} colours in this mask ({len(values)} in all the masks) "
                        f"and no palette file: a JPEG-saved or anti-aliased mask? save masks with exact class "
                        f"colours (PNG, no smoothing), or list the class colours in palette.json")
    if len(values) < 2:
        raise KsegError(f"{masks_dir}: every mask pixel is colour {_rgb(values[0])}: one class, nothing to learn")
    if binary is True and len(values) > 2:
        third = next(r for r in rgb if len(set(r.present().tolist()) - set(values[:2].tolist())))
        extra = _rgb(next(v for v in third.present() if v not in values[:2]))
        raise KsegError(f"{third.path}: colour {extra} besides {_rgb(values[0])} and {_rgb(values[1])}: binary "
                        f"masks hold two colours (background first in colour order); drop --binary for "
                        f"multi-class masks, or map the colours in palette.json")
    if names is not None and len(names) == 1 and len(values) == 2 and binary is not False:
        names = ["background", names[0]]
    if names is not None and len(names) != len(values):
        raise KsegError(f"{masks_dir}: the RGB masks hold {len(values)} colours but {_named(src, names)}: map "
                        f"each colour to its class in palette.json")
    is_binary = binary is not False and len(values) == 2
    if names is None:
        names = ["background", "foreground"] if is_binary else [f"class{i}" for i in range(len(values))]
        src = None
    tables["rgb"] = (values, np.arange(len(values), dtype=np.int16))
    listed = ", ".join(f"{i} {_rgb(v)} {_px(int(c))}" for i, (v, c) in enumerate(zip(values, counts)))
    notes.say(f"RGB masks without a palette file: {len(values)} colours, taken as classes in colour order: "
              f"{listed}" + ("; binary segmentation (1 = foreground, 0 = background)" if is_binary else "")
              + ("; name them in palette.json" if src is None else f"; named from {src}"))
    return names, np.array([_rgb(v) for v in values], np.uint8), is_binary


def _id_table(ids, names, src, binary, ignore_index, masks_dir, tables, notes, embedded):
    """Labels of id masks: binary {0, k} detection, ids beyond the class names, inferred names."""
    values, counts = _totals(ids)
    vset = set(int(v) for v in values)
    ign = ignore_index
    w = sorted(vset - {ign}) if ign is not None else sorted(vset)
    nn = len(names) if names is not None else None
    unknown = f" and {ign} = unknown" if ign is not None and ign in vset else ""
    if names is None and not w:
        raise KsegError(f"{masks_dir}: every mask pixel is unknown ({ign})")
    if names is None and len(w) == 1 and not (binary is not False and ign not in (None, 0) and vset == {0, ign}):
        extra = (f" (and {ign} = unknown; 0/{ign} masks are binary: drop --no-binary)"
                 if binary is False and vset == {0, ign} else unknown and f" ({ign} = unknown)")
        raise KsegError(f"{masks_dir}: every mask pixel is {w[0]}{extra}: one class, nothing to learn")
    fg = None
    if binary is not False and nn in (None, 1, 2):
        if ign is not None and ign != 0 and vset == {0, ign}:
            fg, unknown = ign, ""  # 0/255 masks: 255 is the foreground, not "unknown"
        elif len(w) == 2 and w[0] == 0:
            fg = w[1]
        elif binary is True:
            others = [v for v in w if v != 0]
            if len(others) > 1:
                bad = next(r for r in ids if any(int(v) in others[1:] for v in r.present()))
                third = next(int(v) for v in bad.present() if int(v) in others[1:])
                raise KsegError(f"{bad.path}: value {third} besides 0 and {others[0]}: binary masks hold 0 "
                                f"(background) and one foreground value" + (f" ({ign} = unknown)" if ign is not None
                                                                             else "")
                                + "; drop --binary for multi-class masks")
            fg = others[0] if others else 1
    if fg is not None:
        labels = np.where(values == 0, 0, np.where(values == fg, 1, -1)).astype(np.int16)
        if names is None or len(names) == 1:
            names = ["background", names[0] if names else "foreground"]
        if names == ["background", "foreground"]:
            who = "foreground, 0 = background"
        else:
            who = f"foreground {names[1]!r}, 0 = background {names[0]!r}"
        head = (f"masks hold two values {{0, {fg}}}" if len(w) == 2 or fg == ign else
                f"masks hold {{{', '.join(str(v) for v in w)}}}")
        notes.say(f"{head}{unknown}: binary segmentation ({fg} = {who})")
        tables["ids"] = (values, labels)
        cols = _embedded_colors(ids, [0, fg]) if embedded else None
        if cols is not None:
            notes.say("indexed PNG masks and no palette file: drawing the classes in the masks' own palette colours")
        return names, True, cols
    labels = values.astype(np.int64)
    if ign is not None:
        labels = np.where(labels == ign, -1, labels)
    if names is None:
        top = w[-1]
        if top + 1 > MAX_CLASSES:
            raise KsegError(f"{masks_dir}: class id {top}: kseg's label maps hold at most {MAX_CLASSES} classes "
                            f"(is {ign} the ignore value? pass --ignore-index)")
        names = [f"class{i}" for i in range(top + 1)]
        gaps = sorted(set(range(top + 1)) - set(w))
        notes.say(f"masks hold class ids {_ids_text(w)}{unknown and f' ({ign} = unknown)'} and there is no "
                  f"classes.txt: {top + 1} classes "
                  f"named class0..class{top}")
        if gaps:
            notes.warn(f"class id{'s' if len(gaps) > 1 else ''} {_ids_text(gaps)} never appear"
                       f"{'' if len(gaps) > 1 else 's'} in the masks, yet count{'' if len(gaps) > 1 else 's'} as "
                       f"{'classes' if len(gaps) > 1 else 'a class'}: {len(gaps)} of the {top + 1} classes are empty; "
                       f"list the real classes in classes.txt (one name a line; ids beyond them become unknown)")
    else:
        beyond = [v for v in w if v >= len(names)]
        if beyond:
            files = [r.path for r in ids if any(int(v) in beyond for v in r.present())]
            px = int(counts[np.isin(values, beyond)].sum())
            what = f"class id {beyond[0]} is" if len(beyond) == 1 else f"class ids {_ids_text(beyond)} are"
            notes.warn(f"{what} beyond the {len(names)} classes in {src} (0..{len(names) - 1}), in "
                       f"{_files(files)}: {'its' if len(beyond) == 1 else 'their'} {_px(px)} are treated as "
                       f"unknown")
            labels = np.where(labels >= len(names), -1, labels)
    tables["ids"] = (values, labels.astype(np.int16))
    cols = _embedded_colors(ids, np.arange(len(names))) if embedded else None
    if cols is not None:
        notes.say("indexed PNG masks and no palette file: drawing the classes in the masks' own palette colours")
    return names, False, cols


def _class_warnings(names, totals, present, raws, src, hint, notes):
    """Warn about named classes that never appear and classes with fewer than RARE_PIXELS pixels."""
    def label(c):
        return str(c) if names[c] == f"class{c}" else f"{names[c]!r} ({c})"

    if src is not None:
        missing = [c for c in range(len(names)) if totals[c] == 0]
        if missing:
            notes.warn(f"class{'es' if len(missing) > 1 else ''} {', '.join(label(c) for c in missing)} "
                       f"never appear{'s' if len(missing) == 1 else ''} in the masks")
    for c in range(len(names)):
        if 0 < totals[c] < RARE_PIXELS:
            files = [r for r, p in zip(raws, present) if c in p]
            kinds = {r.kind for r in files}
            tip = hint.get(kinds.pop(), "check those masks") if len(kinds) == 1 else "check those masks"
            if "--ignore-index" in tip:
                tip += f" {c}"
            notes.warn(f"class {label(c)} has only {_px(int(totals[c]))} in all the masks, in "
                       f"{_files(r.path for r in files)}: too few to learn; {tip}")


def folder_datasets(data, masks_dir=None, size=(224, 224), batch_size=16, val_split=0.2, seed=42, sparse=False,
                    augment=None, limit=None, class_names=None, palette=None, ignore_index=255,
                    mask_suffix=None, repeat_threshold=0.0, binary=None, quiet=False):
    """Like :func:`kseg.data.iccv09_datasets`, for a user's folder: ``(train_ds, val_ds, info)``.

    ``info["dataset"]`` is the :class:`FolderDataset` (``binary``, ``quiet`` and
    the other loading arguments go to :func:`folder`); the pipeline and the
    augmentation are iccv09's (:func:`kseg.data.make_dataset`).
    """
    from kseg.data.pipeline import check_size, split_datasets

    check_size(size)  # a bad size fails before any loading
    ds = folder(data, masks_dir, class_names=class_names, palette=palette, ignore_index=ignore_index,
                mask_suffix=mask_suffix, limit=limit, binary=binary, quiet=quiet)
    return split_datasets(ds, size, batch_size, val_split, seed, sparse, augment,
                          repeat_threshold=repeat_threshold)

