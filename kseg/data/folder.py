"""The user's own data: a folder of images and a folder of masks.

Layout (names are matched by stem; a mask may add a suffix such as ``_mask``)::

    my_data/
      images/  a.jpg  b.png ...          any of .jpg .jpeg .png .bmp .gif
      masks/   a.png  b.png ...          .png .bmp .gif .tif(f): never JPEG (lossy)
      palette.json or palette.txt        optional: class names and colours
      classes.txt                        optional: one class name a line

Masks are either

- indexed ("P") or greyscale PNGs whose pixel values are class ids
  (``ignore_index``, 255 by default, marks unknown pixels), or
- RGB PNGs whose colours are looked up in a palette file: JSON
  (``{"sky": [70, 130, 180], ...}`` or ``[{"name": "sky", "color": [70, 130, 180]}, ...]``)
  or text, one class a line (``sky 70 130 180``, ``70 130 180 sky`` or ``sky #4682b4``).
  A palette entry named ``ignore``, ``void``, ``unknown`` or ``unlabeled`` marks unknown
  pixels and is not a class.

:func:`folder` returns the same kind of value as :func:`kseg.data.load_iccv09`
(image paths, int8 label maps with -1 for unknown, class names), so
:func:`kseg.data.make_dataset` and the training command use it unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kseg.data.iccv09 import Iccv09, skip_unreadable
from kseg.errors import KsegError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
MASK_EXTS = (".png", ".bmp", ".gif", ".tif", ".tiff")
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "-mask", "_seg", "_segmentation")
IGNORE_NAMES = ("ignore", "void", "unknown", "unlabeled", "unlabelled")
MAX_CLASSES = 127  # label maps are int8


@dataclass
class FolderDataset(Iccv09):
    """A user's dataset: :class:`Iccv09`'s fields plus the palette's colours (or None)."""

    colors: np.ndarray | None = None


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


def read_mask(path, num_classes: int | None = None, colors=None, ignore_colors=None,
              ignore_index: int | None = 255) -> np.ndarray:
    """Read one mask as int16 class ids with -1 for unknown.

    Indexed and greyscale masks hold class ids (``ignore_index`` = unknown); RGB
    masks are looked up in ``colors`` (row i = class i) and ``ignore_colors``.
    Raises :class:`KsegError` for unreadable files, colours not in the palette
    and ids outside ``[0, num_classes)``.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            # indexed (VOC-style) masks store class ids as indices: their palette is only for display
            if mode in ("RGB", "RGBA", "LA", "PA"):
                arr = np.asarray(im.convert("RGB"))
            elif mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
                arr = np.asarray(im).astype(np.int64)
            else:
                arr = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise KsegError(f"{path}: not a readable mask image ({type(err).__name__})") from None
    if arr.ndim == 3:
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all() and colors is None:
            arr = arr[..., 0].astype(np.int64)  # a greyscale mask saved as RGB
        else:
            return _lookup_colors(path, arr, colors, ignore_colors)
    lab = arr.astype(np.int64)
    if ignore_index is not None:
        lab = np.where(lab == ignore_index, -1, lab)
    if num_classes is not None:
        bad = lab >= num_classes
        if bad.any():
            v = int(lab[bad].max())
            raise KsegError(f"{path}: class id {v} is outside the {num_classes} classes (0..{num_classes - 1}"
                            + (f", {ignore_index} = unknown)" if ignore_index is not None else ")"))
    return np.maximum(lab, -1).astype(np.int16)


def _lookup_colors(path: Path, arr: np.ndarray, colors, ignore_colors) -> np.ndarray:
    if colors is None:
        raise KsegError(f"{path}: an RGB mask needs a palette file (class name and colour per line): "
                        f"pass palette=... (or --palette), or save masks as indexed/greyscale PNGs")
    code = (arr[..., 0].astype(np.int32) << 16) | (arr[..., 1].astype(np.int32) << 8) | arr[..., 2]
    cols = np.asarray(colors, np.int32).reshape(-1, 3)
    ign = np.asarray(ignore_colors if ignore_colors is not None else np.zeros((0, 3)), np.int32).reshape(-1, 3)
    keys = np.concatenate([(cols[:, 0] << 16) | (cols[:, 1] << 8) | cols[:, 2],
                           (ign[:, 0] << 16) | (ign[:, 1] << 8) | ign[:, 2]])
    vals = np.concatenate([np.arange(len(cols)), -np.ones(len(ign), np.int64)])
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    found = keys[pos] == code
    if not found.all():
        miss = code[~found]
        uniq, counts = np.unique(miss, return_counts=True)
        c = int(uniq[np.argmax(counts)])
        rgb = (c >> 16 & 255, c >> 8 & 255, c & 255)
        raise KsegError(f"{path}: colour {rgb} ({int(counts.max())} pixels) is not in the palette"
                        + (f" ({len(uniq)} unknown colours in all)" if len(uniq) > 1 else "")
                        + "; add it to the palette file (name it 'ignore' to mark unknown pixels)")
    return vals[pos].astype(np.int16)


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


def folder(images_dir, masks_dir=None, class_names=None, palette=None, ignore_index: int | None = 255,
           mask_suffix: str | None = None, limit: int | None = None) -> FolderDataset:
    """Load a user's dataset: images and masks matched by name.

    Args:
        images_dir: the images folder; or a folder holding ``images/`` and
            ``masks/`` (or ``labels/``), when ``masks_dir`` is None.
        masks_dir: the masks folder.
        class_names: a list (or comma-separated string) of names; default: the
            palette file's names, else ``classes.txt`` in the root, else
            ``class0..classN`` from the largest id in the masks.
        palette: a palette file (JSON or text), needed for RGB masks; default:
            ``palette.json`` or ``palette.txt`` in the root, if there is one.
        ignore_index: the id that marks unknown pixels in indexed masks (None: none).
        mask_suffix: what a mask's name adds to its image's stem (default: detected).
        limit: keep only the first N pairs (sorted by name).

    Returns a :class:`FolderDataset` (an :class:`Iccv09`) whose ``labels`` are
    int8 maps at each image's size with -1 for unknown pixels.
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
    if class_names is None and pal_names is None:
        classes_file = _find_one(root, ("classes.txt",))
        if classes_file is not None:
            class_names = [ln.strip() for ln in classes_file.read_text().splitlines() if ln.strip()]
    if class_names is not None and pal_names is not None and len(class_names) != len(pal_names):
        raise KsegError(f"{palette}: the palette has {len(pal_names)} classes but {len(class_names)} class "
                        f"names were given")
    names = list(class_names) if class_names is not None else pal_names
    if names is not None and len(names) > MAX_CLASSES:
        raise KsegError(f"{len(names)} classes: kseg's label maps hold at most {MAX_CLASSES}")

    pairs = match_files(images_dir, masks_dir, mask_suffix)
    if limit is not None:
        pairs = pairs[: int(limit)]
    # an image that does not decode is left out (with a warning naming it), not a crash mid-training
    sizes, skipped, _, pairs = skip_unreadable([img for _, img, _ in pairs], pairs)
    ids, image_paths, labels = [], [], []
    for hw, (ident, img, mpath) in zip(sizes, pairs):
        lab = read_mask(mpath, len(names) if names is not None else None, colors, ignore_colors, ignore_index)
        if tuple(lab.shape) != hw:
            raise KsegError(f"{mpath}: mask is {lab.shape[1]}x{lab.shape[0]} (WxH) but its image {img.name} "
                            f"is {hw[1]}x{hw[0]}")
        ids.append(ident)
        image_paths.append(str(img))
        labels.append(lab)
    if names is None:
        top = max(int(lab.max()) for lab in labels)
        if top < 0:
            raise KsegError(f"{masks_dir}: every mask pixel is unknown ({ignore_index})")
        if top + 1 > MAX_CLASSES:
            raise KsegError(f"{masks_dir}: class id {top}: kseg's label maps hold at most {MAX_CLASSES} classes "
                            f"(is {ignore_index} the ignore value? pass ignore_index=...)")
        names = [f"class{i}" for i in range(top + 1)]
    labels = [lab.astype(np.int8) for lab in labels]
    return FolderDataset(root=root, mask="folder", ids=ids, image_paths=image_paths, labels=labels,
                         class_names=tuple(names), colors=colors, skipped=skipped)


def folder_datasets(data, masks_dir=None, size=(224, 224), batch_size=16, val_split=0.2, seed=42, sparse=False,
                    augment=None, limit=None, class_names=None, palette=None, ignore_index=255,
                    mask_suffix=None, repeat_threshold=0.0):
    """Like :func:`kseg.data.iccv09_datasets`, for a user's folder: ``(train_ds, val_ds, info)``.

    ``info["dataset"]`` is the :class:`FolderDataset`; the pipeline and the
    augmentation are iccv09's (:func:`kseg.data.make_dataset`).
    """
    from kseg.data.pipeline import check_size, split_datasets

    check_size(size)  # a bad size fails before any loading
    ds = folder(data, masks_dir, class_names=class_names, palette=palette, ignore_index=ignore_index,
                mask_suffix=mask_suffix, limit=limit)
    return split_datasets(ds, size, batch_size, val_split, seed, sparse, augment,
                          repeat_threshold=repeat_threshold)

