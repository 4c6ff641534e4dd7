"""CVAT's "Segmentation mask 1.1" export: labelmap.txt and colour masks."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from kseg.data.annotations.common import (IGNORE_ID, _check_classes, _image_size, _is_background, _is_ignore,
                                          _Output, _palette, _stem, _summary)
from kseg.data.matching import IMAGE_EXTS
from kseg.errors import KsegError


def _safe_member(name: str) -> bool:
    p = Path(name)
    return not p.is_absolute() and ".." not in p.parts


def _cvat_root(src: Path, tmp: str) -> Path:
    """The folder holding labelmap.txt: ``src`` itself (or one folder below), or the extracted zip."""
    if src.is_file():
        try:
            zf = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError) as err:
            raise KsegError(f"{src}: not a readable zip file ({err})") from None
        with zf:
            names = [n for n in zf.namelist() if _safe_member(n)]
            maps = sorted((n for n in names if n == "labelmap.txt" or n.endswith("/labelmap.txt")),
                          key=lambda n: n.count("/"))
            if not maps:
                raise KsegError(f"{src}: no labelmap.txt: not a CVAT 'Segmentation mask 1.1' export")
            prefix = maps[0][: -len("labelmap.txt")]
            keep = ("labelmap.txt", "ImageSets/", "SegmentationClass/", "JPEGImages/")
            for n in names:
                if n.startswith(prefix) and n[len(prefix):].startswith(keep) and not n.endswith("/"):
                    zf.extract(n, tmp)
            return Path(tmp) / prefix
    if not src.is_dir():
        raise KsegError(f"{src}: no such file or folder")
    if (src / "labelmap.txt").is_file():
        return src
    subs = [p for p in src.iterdir() if p.is_dir() and (p / "labelmap.txt").is_file()]
    if len(subs) == 1:
        return subs[0]
    raise KsegError(f"{src}: no labelmap.txt: not a CVAT 'Segmentation mask 1.1' export")


def _read_labelmap(path: Path, where: str) -> list[tuple[str, tuple[int, int, int]]]:
    out = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        name = parts[0].strip()
        color = parts[1].strip() if len(parts) > 1 else ""
        try:
            rgb = tuple(int(v) for v in color.split(","))
        except ValueError:
            rgb = ()
        if not name or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise KsegError(f"{where}: line {lineno}: expected 'name:r,g,b::', got {line!r}")
        out.append((name, rgb))
    if not out:
        raise KsegError(f"{where}: no labels in labelmap.txt")
    return out


def _cvat_ids(root: Path) -> list[str]:
    sets = root / "ImageSets" / "Segmentation"
    ids: list[str] = []
    if sets.is_dir():
        for f in sorted(sets.glob("*.txt")):
            for ln in f.read_text(encoding="utf-8", errors="replace").splitlines():
                ident = ln.strip().split(" ")[0] if ln.strip() else ""
                if ident and ident not in ids:
                    ids.append(ident)
    if not ids:
        seg = root / "SegmentationClass"
        ids = sorted(str(p.relative_to(seg).with_suffix("")).replace(os.sep, "/") for p in seg.rglob("*.png"))
    return ids


def _find_image(folder: Path, ident: str) -> Path | None:
    for base in dict.fromkeys([ident, Path(ident).name]):
        direct = folder / base
        if direct.is_file() and direct.suffix:
            return direct
        parent = (folder / base).parent
        if parent.is_dir():
            for p in sorted(parent.glob(f"{Path(base).name}.*")):
                if p.is_file() and p.stem == Path(base).name:
                    return p
    return None


def import_cvat(src, out, overwrite: bool = False, images=None) -> dict:
    """Import CVAT's "Segmentation mask 1.1" export (the zip or its unzipped folder) into ``out``.

    ``labelmap.txt`` names the classes and their colours; ids follow its order
    with the background (black when the labelmap has none) as id 0.
    ``SegmentationClass/<id>.png`` colour masks become class ids; a colour not in
    the labelmap is an error. Images come from the export's ``JPEGImages/``, or
    from ``images`` when the export has none.

    Returns ``{"out", "class_names", "images", "notes"}``.
    """
    src = Path(src).expanduser()
    images = Path(images).expanduser() if images is not None else None
    if images is not None and not images.is_dir():
        raise KsegError(f"{images}: no such folder")
    with tempfile.TemporaryDirectory(prefix="kseg-cvat-") as td:
        root = _cvat_root(src, td)
        shown = lambda p: f"{src}:{p.relative_to(root).as_posix()}" if src.is_file() else str(p)  # noqa: E731
        classes, lookup, notes = _cvat_classes(root / "labelmap.txt", shown(root / "labelmap.txt"))
        class_names = [n for n, _ in classes]
        seg_dir = root / "SegmentationClass"
        if not seg_dir.is_dir():
            raise KsegError(f"{shown(seg_dir)}: missing: the export has no class masks "
                            f"(export as 'Segmentation mask 1.1')")
        idents = _cvat_ids(root)
        if not idents:
            raise KsegError(f"{shown(seg_dir)}: no masks in the export")
        img_dir = root / "JPEGImages"
        colors = np.array([c for _, c in classes], np.uint8)
        pal = _palette(colors)
        with _Output(out, overwrite, src) as w:
            for ident in idents:
                mpath = seg_dir / f"{ident}.png"
                if not mpath.is_file():
                    raise KsegError(f"{shown(mpath)}: missing: ImageSets lists {ident!r} but it has no mask")
                img = _cvat_image(img_dir, images, ident, shown(mpath))
                label = _cvat_label(mpath, shown(mpath), lookup)
                h, wd = _image_size(img)
                if (h, wd) != label.shape:
                    raise KsegError(f"{shown(mpath)}: mask is {label.shape[1]}x{label.shape[0]} (WxH) but its "
                                    f"image {img.name} is {wd}x{h}")
                w.add(_stem(ident), shown(mpath), img, label, pal)
            if w.converted:
                notes.append(f"{w.converted} image(s) re-encoded as PNG (kseg reads {', '.join(IMAGE_EXTS)})")
            out_path = w.finish(class_names, colors)
    result = {"out": out_path, "class_names": class_names, "images": len(idents)}
    return _summary(result, src, notes)


def _cvat_classes(path: Path, where: str):
    """``(classes [(name, rgb)] in id order, colour code -> id, notes)`` from labelmap.txt."""
    notes = []
    entries = _read_labelmap(path, where)
    ignore = [(n, c) for n, c in entries if _is_ignore(n)]
    classes = [(n, c) for n, c in entries if not _is_ignore(n)]
    bg = [i for i, (n, _) in enumerate(classes) if _is_background(n)]
    if bg:
        classes.insert(0, classes.pop(bg[0]))
    elif (0, 0, 0) not in [c for _, c in entries]:
        classes.insert(0, ("background", (0, 0, 0)))
        notes.append("labelmap.txt has no background: black (0, 0, 0) pixels are background (id 0)")
    _check_classes([n for n, _ in classes], where)
    lookup: dict[int, int] = {}
    for i, (n, c) in enumerate(classes + ignore):
        code = (c[0] << 16) | (c[1] << 8) | c[2]
        if code in lookup:
            raise KsegError(f"{where}: colour {c} is given to two labels")
        lookup[code] = i if i < len(classes) else IGNORE_ID
    if ignore:
        notes.append(f"label(s) {', '.join(n for n, _ in ignore)} mark unknown pixels ({IGNORE_ID})")
    return classes, lookup, notes


def _cvat_image(img_dir: Path, images: Path | None, ident: str, where: str) -> Path:
    """The image of mask ``ident``: in the export's JPEGImages/, else in ``images``."""
    img = _find_image(img_dir, ident) if img_dir.is_dir() else None
    if img is None and images is not None:
        img = _find_image(images, ident)
    if img is None:
        place = (f"in {images}" if images is not None else
                 "in the export's JPEGImages/" if img_dir.is_dir() else
                 "(the export has no images: export with images, or pass --images DIR / images=...)")
        raise KsegError(f"{where}: missing image: no image named {Path(ident).name}.* {place}")
    return img


def _cvat_label(mpath: Path, where: str, lookup: dict) -> np.ndarray:
    """A colour mask as class ids (uint8); a colour not in the labelmap is an error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(mpath) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise KsegError(f"{where}: not a readable mask image ({type(err).__name__})") from None
    code = ((rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
            | rgb[..., 2])
    uniq, inv, counts = np.unique(code, return_inverse=True, return_counts=True)
    missing = [(int(u), int(n)) for u, n in zip(uniq, counts) if int(u) not in lookup]
    if missing:
        u, n = max(missing, key=lambda t: t[1])
        raise KsegError(f"{where}: colour {(u >> 16 & 255, u >> 8 & 255, u & 255)} ({n} pixels) "
                        f"is not in labelmap.txt"
                        + (f" ({len(missing)} unknown colours in all)" if len(missing) > 1 else ""))
    return np.array([lookup[int(u)] for u in uniq], np.uint8)[inv.reshape(code.shape)]
