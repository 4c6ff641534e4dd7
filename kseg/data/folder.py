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

The parts live in :mod:`kseg.data.palettes` (palette files), :mod:`kseg.data.masks`
(decoding masks, :func:`read_mask`), :mod:`kseg.data.matching` (pairing files) and
:mod:`kseg.data.mask_classes` (what the values mean, the notes); their public names
are importable from here too.

:func:`folder` returns the same kind of value as :func:`kseg.data.load_iccv09`
(image paths, int8 label maps with -1 for unknown, class names), so
:func:`kseg.data.make_dataset` and the training command use it unchanged.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.data.iccv09 import Iccv09
from kseg.data.images import skip_unreadable
from kseg.data.mask_classes import (GIVEN, MAX_AUTO_COLORS, MAX_CLASSES, RARE_PIXELS,  # noqa: F401
                                    _class_warnings, _named, _Notes, label_tables)
from kseg.data.masks import _apply, _factorize, _read_all, read_mask  # noqa: F401
from kseg.data.matching import IMAGE_EXTS, MASK_EXTS, MASK_SUFFIXES, match_files  # noqa: F401
from kseg.data.palettes import IGNORE_NAMES, read_palette, write_palette  # noqa: F401
from kseg.errors import KsegError


@dataclass(repr=False)  # Iccv09's one-line repr
class FolderDataset(Iccv09):
    """A user's dataset: :class:`Iccv09`'s fields plus the palette's colours (or None)."""

    colors: np.ndarray | None = None
    binary: bool = False
    notes: list[str] = field(default_factory=list)


def _find_one(root: Path, names) -> Path | None:
    for n in names:
        if (root / n).is_file():
            return root / n
    return None


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
    root, images_dir, masks_dir = _folders(images_dir, masks_dir)
    if palette is None:
        palette = _find_one(root, ("palette.json", "palette.txt"))
    names, src, colors, ignore_colors = _class_names(root, class_names, palette, binary)
    pairs, skipped, raws = _read_pairs(images_dir, masks_dir, mask_suffix, limit)
    notes = _Notes()
    raws, names, colors, is_binary, tables, hint = label_tables(raws, names, src, binary, ignore_index, masks_dir,
                                                                palette, colors, ignore_colors, notes)
    rgb = any(r.kind == "rgb" for r in raws)
    is_binary = _two_classes(names, src, binary, is_binary, rgb and palette is None, notes)
    labels, present, totals = _label_maps(raws, tables, len(names))
    _class_warnings(names, totals, present, raws, src, hint, notes)
    if not quiet:
        for note in notes:
            print(f"kseg: {note}", file=sys.stderr)
    return FolderDataset(root=root, mask="folder", ids=[i for i, _, _ in pairs],
                         image_paths=[str(img) for _, img, _ in pairs], labels=labels,
                         class_names=tuple(names), colors=colors, skipped=skipped, binary=is_binary,
                         notes=list(notes))


def _folders(images_dir, masks_dir) -> tuple[Path, Path, Path]:
    """``(root, images folder, masks folder)``: ``images_dir`` may hold ``images/`` and ``masks/``."""
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
        return root, sub_img, sub_mask
    return images_dir.parent, images_dir, Path(masks_dir).expanduser()


def _class_names(root, class_names, palette, binary):
    """``(names or None, where they come from, palette colours, ignore colours)``."""
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
    return names, src, colors, ignore_colors


def _read_pairs(images_dir, masks_dir, mask_suffix, limit):
    """``(pairs, skipped images, raw masks)``: matched files, the images that decode and their masks."""
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
    return pairs, skipped, raws


def _two_classes(names, src, binary, is_binary, auto_rgb, notes) -> bool:
    """Refuse one class; any two classes are binary (unless ``binary=False``); say where the names came from."""
    if len(names) < 2:
        raise KsegError(f"{_named(src, names)}; one class is nothing to learn: name every class, the "
                        f"background too")
    if binary is not False and len(names) == 2 and not is_binary:
        notes.say(f"two classes from {src}: binary segmentation (1 = foreground {names[1]!r}, 0 = background "
                  f"{names[0]!r})")
        return True
    if not is_binary and src is not None and src != GIVEN and not auto_rgb:
        notes.insert(0, f"{len(names)} classes from {src}: {', '.join(names)}")
    return is_binary


def _label_maps(raws, tables, num_classes):
    """int8 label maps, each mask's set of classes, and every class's pixel count."""
    labels, present = [], []
    totals = np.zeros(num_classes, np.int64)
    for r in raws:
        lut = _apply(r, *tables[r.kind])
        pres = lut[r.counts > 0]
        np.add.at(totals, pres[pres >= 0], r.counts[r.counts > 0][pres >= 0])
        present.append(set(int(v) for v in pres[pres >= 0]))
        labels.append(lut.astype(np.int8)[r.idx])
    return labels, present, totals


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

