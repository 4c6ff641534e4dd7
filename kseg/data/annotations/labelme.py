"""LabelMe: a folder of ``.json`` files whose shapes are painted into class-id masks."""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path

import numpy as np

from kseg.data.annotations.common import (BACKGROUND_NAMES, IGNORE_ID, _check_classes, _few, _is_background,
                                          _is_ignore, _load_json, _Output, _palette, _summary, voc_colormap)
from kseg.data.matching import IMAGE_EXTS
from kseg.errors import KsegError

LABELME_SHAPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "mask")
LINE_WIDTH = 10  # LabelMe's own width for line and linestrip shapes (labelme.utils.shape_to_mask)
_SHIFT = 4  # cv2 drawing with 1/16-pixel precision


def _read_labels(labels) -> tuple[list[str], str]:
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise KsegError(f"{path}: cannot read the labels file ({err.strerror})") from None
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not entries:
            raise KsegError(f"{path}: no labels in the file")
        return entries, str(path)
    entries = [str(x).strip() for x in labels if str(x).strip()]
    if not entries:
        raise KsegError("labels: the list is empty")
    return entries, "labels"


def _labelme_classes(labels, found: list[str]):
    """``(class_names, name -> id, where)``: ids for every LabelMe label."""
    if labels is None:
        names = sorted({n for n in found if not _is_background(n) and not _is_ignore(n)})
        bg = "_background_" if "_background_" in found else "background"
        class_names, where = [bg] + names, None
    else:
        entries, where = _read_labels(labels)
        class_names = [e for e in entries if not _is_ignore(e)]
        bgs = [i for i, n in enumerate(class_names) if _is_background(n)]
        if bgs and bgs != [0]:
            raise KsegError(f"{where}: {class_names[bgs[-1]]!r} must be the first class (id 0)")
        if not bgs:
            class_names = ["background"] + class_names
    _check_classes(class_names, where or "labels")
    ids = {n: i for i, n in enumerate(class_names)}
    for n in BACKGROUND_NAMES:
        ids.setdefault(n, 0)
    return class_names, ids, where


def _labelme_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise KsegError(f"{src}: no such file or folder")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() == ".json")
    if not files:
        raise KsegError(f"{src}: no LabelMe .json files in this folder")
    return files


def _b64_image(path: Path, data, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=False)
        im = Image.open(io.BytesIO(raw))
        im.load()
    except (binascii.Error, ValueError, TypeError, OSError, UnidentifiedImageError):
        raise KsegError(f"{path}: {what} is not a base64-encoded image") from None
    return raw, im


def _labelme_image(path: Path, doc: dict):
    """``(image, (h, w), exif_rotated)``: the image as a Path, ``(bytes, ext)`` or a PIL image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    rel = doc.get("imagePath")
    img_path = None
    if isinstance(rel, str) and rel:
        cand = (path.parent / rel.replace("\\", "/"))
        if cand.is_file():
            img_path = cand
    if img_path is not None:
        try:
            with Image.open(img_path) as im:
                orient = im.getexif().get(0x0112, 1)
                if orient not in (None, 1):  # LabelMe shows (and annotates) the EXIF-rotated image
                    im = ImageOps.exif_transpose(im)
                    im.load()
                    return im, (im.size[1], im.size[0]), True
                return img_path, (im.size[1], im.size[0]), False
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise KsegError(f"{img_path}: not a readable image ({type(err).__name__})") from None
    data = doc.get("imageData")
    if not data:
        where = f"imagePath {rel!r} not found next to it" if rel else "no imagePath"
        raise KsegError(f"{path}: missing image: {where} and no imageData")
    raw, im = _b64_image(path, data, "imageData")
    fmt = (im.format or "").upper()
    ext = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif"}.get(fmt)
    orient = im.getexif().get(0x0112, 1) if fmt == "JPEG" else 1
    if orient not in (None, 1):
        im = ImageOps.exif_transpose(im)
        return im, (im.size[1], im.size[0]), True
    if ext is None:
        return im, (im.size[1], im.size[0]), False
    return (raw, ext), (im.size[1], im.size[0]), False


def _points(path: Path, k: int, shape: dict) -> np.ndarray:
    pts = shape.get("points")
    try:
        arr = np.asarray(pts, np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise KsegError(f"{path}: shape {k} ({shape.get('label')!r}): points must be a list of [x, y]")
    return arr


def _shape_mask(path: Path, k: int, shape: dict, kind: str, h: int, w: int, line_width: int):
    import cv2

    pts = _points(path, k, shape)
    name = f"{path}: shape {k} ({shape.get('label')!r}, {kind})"
    m = np.zeros((h, w), np.uint8)
    fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
    need = {"rectangle": 2, "circle": 2, "line": 2}
    if kind in need and len(pts) != need[kind]:
        raise KsegError(f"{name}: needs {need[kind]} points, has {len(pts)}")
    if kind == "polygon":
        if len(pts) < 3:
            raise KsegError(f"{name}: polygon with {len(pts)} point(s); a polygon needs at least 3")
        cv2.fillPoly(m, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = np.round(pts).astype(int)
        cv2.rectangle(m, (min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1)), 1, -1)
    elif kind == "circle":
        r = float(np.hypot(*(pts[1] - pts[0])))
        cv2.circle(m, tuple(int(v) for v in fixed[0]), int(round(r * (1 << _SHIFT))), 1, -1, shift=_SHIFT)
    elif kind in ("line", "linestrip"):
        if len(pts) < 2:
            raise KsegError(f"{name}: needs at least 2 points, has {len(pts)}")
        cv2.polylines(m, [fixed], False, 1, thickness=int(line_width), shift=_SHIFT)
    elif kind == "mask":
        if len(pts) != 2:
            raise KsegError(f"{name}: needs 2 points (the mask's corners), has {len(pts)}")
        if not shape.get("mask"):
            raise KsegError(f"{name}: no 'mask' data")
        _, im = _b64_image(path, shape["mask"], f"shape {k}'s mask")
        bits = np.asarray(im.convert("L")) > 0
        x0, y0 = (int(v) for v in np.floor(pts.min(axis=0)))
        bh, bw = bits.shape
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + bh, h), min(x0 + bw, w)
        if ye > ys and xe > xs:
            m[ys:ye, xs:xe] = bits[ys - y0: ye - y0, xs - x0: xe - x0]
    return m.astype(bool)


def import_labelme(src, out, labels=None, overwrite: bool = False, line_width: int = LINE_WIDTH) -> dict:
    """Import a folder of LabelMe ``.json`` files (or one file) into ``out``.

    Each file's image is ``imagePath`` (relative to the JSON), else its
    ``imageData``. Shapes are painted in order, later over earlier: polygons,
    rectangles, circles, lines and linestrips (``line_width`` pixels wide) and
    ``mask`` shapes; point shapes are skipped (a label that only points use is
    no class). An image whose EXIF orientation turns it is written turned (as
    PNG), as LabelMe showed it.

    Args:
        src: a folder of LabelMe files, or one file.
        out: the output folder.
        labels: the classes in id order: a list or a labels file (one a line, as
            labelme2voc reads; ``__ignore__`` = 255, ``_background_`` = 0).
            Default: background 0 and the labels found, sorted.
        overwrite: replace the images/, masks/, classes.txt and palette.json of
            an ``out`` that is not empty.

    Returns ``{"out", "class_names", "images", "shapes", "skipped_points", "notes"}``.
    """
    src = Path(src).expanduser()
    docs = [(f, _labelme_doc(f)) for f in _labelme_files(src)]
    # a label used only by point shapes (which mark no region) is no class
    found = [s["label"] for _, d in docs for s in d["shapes"] if (s.get("shape_type") or "polygon") != "point"]
    class_names, ids, where = _labelme_classes(labels, found)
    ignored = sorted({n for n in found if _is_ignore(n)})
    pal = _palette(voc_colormap()[: len(class_names)])
    n_shapes, points, rotated = 0, [], 0
    with _Output(out, overwrite, src) as w:
        for f, doc in docs:
            image, (h, wd), turned = _labelme_image(f, doc)
            rotated += turned
            jh, jw = doc.get("imageHeight"), doc.get("imageWidth")
            if isinstance(jh, int) and isinstance(jw, int) and (jh, jw) != (h, wd):
                raise KsegError(f"{f}: imageHeight x imageWidth is {jh}x{jw} but the image is {h}x{wd}")
            label, painted, skipped = _paint(f, doc, (h, wd), ids, where, class_names, line_width)
            n_shapes += painted
            points += [f.name] * skipped
            w.add(f.stem, str(f), image, label, pal)
        notes = _labelme_notes(points, ignored, rotated, w.converted)
        out_path = w.finish(class_names, pal[: len(class_names)])
    result = {"out": out_path, "class_names": class_names, "images": len(docs), "shapes": n_shapes,
              "skipped_points": len(points)}
    return _summary(result, src, notes)


def _labelme_doc(f: Path) -> dict:
    """A LabelMe file's contents, checked: a ``shapes`` list of labelled shapes of known types."""
    doc = _load_json(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise KsegError(f"{f}: not a LabelMe file (no 'shapes' list)")
    for k, s in enumerate(doc["shapes"]):
        if not isinstance(s, dict) or not isinstance(s.get("label"), str):
            raise KsegError(f"{f}: shape {k} has no label")
        kind = s.get("shape_type") or "polygon"
        if kind not in LABELME_SHAPES:
            raise KsegError(f"{f}: shape {k} ({s['label']!r}): unknown shape type {kind!r} "
                            f"(known: {', '.join(LABELME_SHAPES)})")
    return doc


def _paint(f: Path, doc: dict, hw, ids, where, class_names, line_width):
    """``(label map, shapes painted, point shapes skipped)``: the shapes painted in order, later over earlier."""
    h, wd = hw
    label = np.zeros((h, wd), np.uint8)
    painted = skipped = 0
    for k, s in enumerate(doc["shapes"]):
        name, kind = s["label"], s.get("shape_type") or "polygon"
        if kind == "point":
            _points(f, k, s)
            skipped += 1
            continue
        if _is_ignore(name):
            cid = IGNORE_ID
        elif name in ids:
            cid = ids[name]
        else:
            raise KsegError(f"{f}: shape {k}: label {name!r} is not in {where} "
                            f"(its classes: {_few(class_names)})")
        label[_shape_mask(f, k, s, kind, h, wd, line_width)] = cid
        painted += 1
    return label, painted, skipped


def _labelme_notes(points, ignored, rotated, converted) -> list[str]:
    notes = []
    if points:
        notes.append(f"skipped {len(points)} point shape(s) ({_few(sorted(set(points)), 3)}): "
                     f"a point marks no region")
    if ignored:
        notes.append(f"label(s) {', '.join(ignored)} mark unknown pixels ({IGNORE_ID})")
    if rotated:
        notes.append(f"{rotated} image(s) turned by their EXIF orientation, as LabelMe shows them "
                     f"(written as PNG)")
    if converted:
        notes.append(f"{converted} image(s) re-encoded as PNG (kseg reads {', '.join(IMAGE_EXTS)})")
    return notes
