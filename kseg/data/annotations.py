"""Import annotations made with LabelMe, CVAT or a COCO tool into kseg's folder layout.

Every importer writes the layout that :func:`kseg.data.folder` reads::

    OUT/images/<stem>.<ext>     the images, hard-linked (or copied) from the source, never moved
    OUT/masks/<stem>.png        indexed ("P") PNGs: pixel value = class id, 255 = unknown;
                                the PNG's palette holds the class colours
    OUT/classes.txt             one class name a line, line i = id i (id 0 = background)
    OUT/palette.json            {"name": [r, g, b], ...} in id order

Sources:

- :func:`import_labelme`: a folder of LabelMe ``.json`` files. Shapes (polygon,
  rectangle, circle, line, linestrip, mask) are painted in file order, later
  shapes over earlier ones, as LabelMe does; point shapes mark no region and are
  skipped. Ids: ``labels`` (a list or a labelme2voc ``labels.txt``: ``__ignore__``
  = 255, ``_background_`` = 0, then ids 1, 2, ... in order), else background 0
  and the label names found, sorted.
- :func:`import_cvat`: CVAT's "Segmentation mask 1.1" export (the zip or its
  folder): ``labelmap.txt`` gives names, colours and ids (in its order, the
  background first), ``SegmentationClass/*.png`` the colour masks.
- :func:`import_coco`: a COCO instance or stuff JSON: categories sorted by id
  become ids 1..K (0 = background); polygons and RLE masks are decoded with
  ``pycocotools``; larger instances are painted first, smaller ones on top;
  crowd regions are unknown (255) unless ``crowd="class"``.
- :func:`import_annotations` detects which of the three a source is.

A label named ``ignore``, ``void``, ``unknown`` or ``unlabeled`` (or LabelMe's
``__ignore__``) marks unknown pixels (255), as in kseg's palette files.
An output folder that exists and is not empty is refused unless
``overwrite=True``, which replaces only its ``images/``, ``masks/``,
``classes.txt`` and ``palette.json``. The import is written into a temporary
folder beside the output and renamed into place at the end, so an interrupted
import leaves no half-written output. Problems with the input raise
:class:`kseg.errors.KsegError` naming the file and the problem.

Command line::

    python -m kseg.data.annotations SRC --out DIR [--format labelme|cvat|coco] [--images DIR]
                                    [--labels FILE] [--crowd ignore|class] [--overwrite]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from kseg.data.folder import IGNORE_NAMES, IMAGE_EXTS, MAX_CLASSES
from kseg.errors import KsegError, cli_entry

IGNORE_ID = 255
FORMATS = ("labelme", "cvat", "coco")
BACKGROUND_NAMES = ("background", "_background_")
LABELME_SHAPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "mask")
LINE_WIDTH = 10  # LabelMe's own width for line and linestrip shapes (labelme.utils.shape_to_mask)
_SHIFT = 4  # cv2 drawing with 1/16-pixel precision


def _say(msg: str) -> None:
    print(f"kseg: {msg}", file=sys.stderr)


def _is_ignore(name: str) -> bool:
    return name == "__ignore__" or name.strip().lower() in IGNORE_NAMES


def _is_background(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def voc_colormap(n: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map: ``(n, 3)`` uint8, id 0 black, 1 (128, 0, 0), ..., 255 (224, 224, 192)."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def _few(names, n: int = 12) -> str:
    names = list(names)
    more = f", ... and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


# --------------------------------------------------------------------------- output


class _Output:
    """The output folder, built in a temporary folder beside it and renamed into place by :meth:`finish`."""

    PARTS = ("images", "masks", "classes.txt", "palette.json")

    def __init__(self, out, overwrite: bool, src: Path):
        self.out = Path(out).expanduser()
        if self.out.exists() and not self.out.is_dir():
            raise KsegError(f"{self.out}: exists and is not a folder")
        if self.out.is_dir() and any(self.out.iterdir()):
            if not overwrite:
                raise KsegError(f"{self.out}: exists and is not empty; choose a new folder or pass --overwrite "
                                f"(overwrite=True) to replace its images/, masks/, classes.txt and palette.json")
            src_r, out_r = Path(src).expanduser().resolve(), self.out.resolve()
            if src_r == out_r or out_r in src_r.parents:
                raise KsegError(f"{self.out}: holds the source {src}; import into another folder")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".tmp-{os.getpid()}-{self.out.name}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        (self.tmp / "images").mkdir(parents=True)
        (self.tmp / "masks").mkdir()
        self.stems: dict[str, str] = {}
        self.converted = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def add(self, stem: str, where: str, image, label: np.ndarray, palette: np.ndarray) -> None:
        """Write one image (a path to link/copy, or ``(bytes, ext)``, or a PIL image) and its label map."""
        from PIL import Image

        if stem in self.stems:
            raise KsegError(f"{where}: two images would both be named {stem!r} in the output "
                            f"(the other: {self.stems[stem]})")
        self.stems[stem] = where
        if isinstance(image, Path):
            ext = image.suffix.lower()
            if ext in IMAGE_EXTS:
                dst = self.tmp / "images" / f"{stem}{image.suffix}"
                try:
                    os.link(image, dst)
                except OSError:
                    shutil.copy2(image, dst)
            else:  # a format kseg's loader does not read (.tif, .webp): re-encoded losslessly
                with Image.open(image) as im:
                    im.convert("RGB").save(self.tmp / "images" / f"{stem}.png")
                self.converted += 1
        elif isinstance(image, tuple):
            data, ext = image
            (self.tmp / "images" / f"{stem}{ext}").write_bytes(data)
        else:
            image.convert("RGB").save(self.tmp / "images" / f"{stem}.png")
        label = np.ascontiguousarray(label, np.uint8)
        im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
        im.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
        im.save(self.tmp / "masks" / f"{stem}.png")

    def finish(self, class_names, colors) -> Path:
        """Write classes.txt and palette.json and move the folder into place."""
        names = list(class_names)
        (self.tmp / "classes.txt").write_text("".join(f"{n}\n" for n in names))
        pal = {n: [int(v) for v in c] for n, c in zip(names, np.asarray(colors).reshape(-1, 3))}
        (self.tmp / "palette.json").write_text(json.dumps(pal, indent=1) + "\n")
        out = self.out
        if not out.exists() or not any(out.iterdir()):
            os.replace(self.tmp, out)  # a new or empty folder: one rename
            return out
        old = out / f".old-{os.getpid()}"
        old.mkdir(exist_ok=True)
        for part in self.PARTS:
            if (out / part).exists() or (out / part).is_symlink():
                os.rename(out / part, old / part)
        for part in self.PARTS:
            os.rename(self.tmp / part, out / part)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return out


def _palette(colors) -> np.ndarray:
    """A 256-entry PNG palette: the classes' colours, then VOC's colour map (255 = VOC's void colour)."""
    pal = voc_colormap()
    colors = np.asarray(colors, np.uint8).reshape(-1, 3)
    pal[: len(colors)] = colors
    return pal


def _check_classes(names, where) -> None:
    if len(names) > MAX_CLASSES:
        raise KsegError(f"{where}: {len(names)} classes (with background): kseg's label maps hold at most "
                        f"{MAX_CLASSES}")
    seen = set()
    for n in names:
        if n in seen:
            raise KsegError(f"{where}: class {n!r} appears twice")
        seen.add(n)


def _summary(result: dict, src, notes: list[str]) -> dict:
    names = result["class_names"]
    print(f"kseg: imported {result['images']} images, {len(names)} classes ({_few(names)}) from {src} "
          f"into {result['out']}")
    for n in notes:
        _say(n)
    result["notes"] = list(notes)
    return result


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise KsegError(f"{path}: not a readable image ({type(err).__name__})") from None


def _stem(ident: str) -> str:
    """An output file stem for an image id that may hold sub-folders (``a/b/c.jpg`` -> ``a__b__c``)."""
    p = Path(ident.replace("\\", "/"))
    parts = [q for q in p.parent.parts if q not in ("", ".", "..", "/")] + [p.stem]
    return "__".join(parts)


# --------------------------------------------------------------------------- LabelMe


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


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KsegError(f"{path}: not a UTF-8 text file") from None
    except ValueError as err:
        raise KsegError(f"{path}: malformed JSON ({err})") from None
    except OSError as err:
        raise KsegError(f"{path}: cannot read ({err.strerror})") from None


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
    files = _labelme_files(src)
    docs = []
    for f in files:
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
        docs.append((f, doc))
    # a label used only by point shapes (which mark no region) is no class
    found = [s["label"] for _, d in docs for s in d["shapes"] if (s.get("shape_type") or "polygon") != "point"]
    class_names, ids, where = _labelme_classes(labels, found)
    ignored = sorted({n for n in found if _is_ignore(n)})
    notes = []
    pal = _palette(voc_colormap()[: len(class_names)])
    n_shapes, points, rotated = 0, [], 0
    with _Output(out, overwrite, src) as w:
        for f, doc in docs:
            image, (h, wd), turned = _labelme_image(f, doc)
            rotated += turned
            jh, jw = doc.get("imageHeight"), doc.get("imageWidth")
            if isinstance(jh, int) and isinstance(jw, int) and (jh, jw) != (h, wd):
                raise KsegError(f"{f}: imageHeight x imageWidth is {jh}x{jw} but the image is {h}x{wd}")
            label = np.zeros((h, wd), np.uint8)
            for k, s in enumerate(doc["shapes"]):
                name, kind = s["label"], s.get("shape_type") or "polygon"
                if kind == "point":
                    _points(f, k, s)
                    points.append(f.name)
                    continue
                if _is_ignore(name):
                    cid = IGNORE_ID
                elif name in ids:
                    cid = ids[name]
                else:
                    raise KsegError(f"{f}: shape {k}: label {name!r} is not in {where} "
                                    f"(its classes: {_few(class_names)})")
                label[_shape_mask(f, k, s, kind, h, wd, line_width)] = cid
                n_shapes += 1
            w.add(f.stem, str(f), image, label, pal)
        if points:
            notes.append(f"skipped {len(points)} point shape(s) ({_few(sorted(set(points)), 3)}): "
                         f"a point marks no region")
        if ignored:
            notes.append(f"label(s) {', '.join(ignored)} mark unknown pixels ({IGNORE_ID})")
        if rotated:
            notes.append(f"{rotated} image(s) turned by their EXIF orientation, as LabelMe shows them "
                         f"(written as PNG)")
        if w.converted:
            notes.append(f"{w.converted} image(s) re-encoded as PNG (kseg reads {', '.join(IMAGE_EXTS)})")
        out_path = w.finish(class_names, pal[: len(class_names)])
    result = {"out": out_path, "class_names": class_names, "images": len(docs), "shapes": n_shapes,
              "skipped_points": len(points)}
    return _summary(result, src, notes)


# --------------------------------------------------------------------------- CVAT


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
    from PIL import Image, UnidentifiedImageError

    src = Path(src).expanduser()
    images = Path(images).expanduser() if images is not None else None
    if images is not None and not images.is_dir():
        raise KsegError(f"{images}: no such folder")
    notes = []
    with tempfile.TemporaryDirectory(prefix="kseg-cvat-") as td:
        root = _cvat_root(src, td)
        shown = lambda p: f"{src}:{p.relative_to(root).as_posix()}" if src.is_file() else str(p)  # noqa: E731
        entries = _read_labelmap(root / "labelmap.txt", shown(root / "labelmap.txt"))
        ignore = [(n, c) for n, c in entries if _is_ignore(n)]
        classes = [(n, c) for n, c in entries if not _is_ignore(n)]
        bg = [i for i, (n, _) in enumerate(classes) if _is_background(n)]
        if bg:
            classes.insert(0, classes.pop(bg[0]))
        elif (0, 0, 0) not in [c for _, c in entries]:
            classes.insert(0, ("background", (0, 0, 0)))
            notes.append("labelmap.txt has no background: black (0, 0, 0) pixels are background (id 0)")
        class_names = [n for n, _ in classes]
        _check_classes(class_names, shown(root / "labelmap.txt"))
        lookup: dict[int, int] = {}
        for i, (n, c) in enumerate(classes + ignore):
            code = (c[0] << 16) | (c[1] << 8) | c[2]
            if code in lookup:
                raise KsegError(f"{shown(root / 'labelmap.txt')}: colour {c} is given to two labels")
            lookup[code] = i if i < len(classes) else IGNORE_ID
        if ignore:
            notes.append(f"label(s) {', '.join(n for n, _ in ignore)} mark unknown pixels ({IGNORE_ID})")
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
                img = _find_image(img_dir, ident) if img_dir.is_dir() else None
                if img is None and images is not None:
                    img = _find_image(images, ident)
                if img is None:
                    where = (f"in {images}" if images is not None else
                             "in the export's JPEGImages/" if img_dir.is_dir() else
                             "(the export has no images: export with images, or pass --images DIR / images=...)")
                    raise KsegError(f"{shown(mpath)}: missing image: no image named {Path(ident).name}.* {where}")
                try:
                    with Image.open(mpath) as im:
                        rgb = np.asarray(im.convert("RGB"))
                except (OSError, UnidentifiedImageError, ValueError) as err:
                    raise KsegError(f"{shown(mpath)}: not a readable mask image ({type(err).__name__})") from None
                code = ((rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
                        | rgb[..., 2])
                uniq, inv, counts = np.unique(code, return_inverse=True, return_counts=True)
                missing = [(int(u), int(n)) for u, n in zip(uniq, counts) if int(u) not in lookup]
                if missing:
                    u, n = max(missing, key=lambda t: t[1])
                    raise KsegError(f"{shown(mpath)}: colour {(u >> 16 & 255, u >> 8 & 255, u & 255)} ({n} pixels) "
                                    f"is not in labelmap.txt"
                                    + (f" ({len(missing)} unknown colours in all)" if len(missing) > 1 else ""))
                label = np.array([lookup[int(u)] for u in uniq], np.uint8)[inv.reshape(code.shape)]
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


# --------------------------------------------------------------------------- COCO


def _coco_mask(path: Path, ann: dict, h: int, w: int):
    """The annotation's mask (bool HxW), or None when it has no segmentation."""
    import pycocotools.mask as mask_utils

    seg = ann.get("segmentation")
    aid = ann.get("id")
    where = f"{path}: annotation {aid}"
    if seg is None or (isinstance(seg, list) and not seg):
        return None
    if isinstance(seg, list):
        polys = []
        for poly in seg:
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                raise KsegError(f"{where}: segmentation must be polygons [[x1, y1, x2, y2, ...], ...] or RLE")
            if len(poly) % 2:
                raise KsegError(f"{where}: polygon with an odd number of coordinates ({len(poly)})")
            if len(poly) < 6:
                raise KsegError(f"{where}: polygon with {len(poly) // 2} point(s); a polygon needs at least 3")
            polys.append([float(v) for v in poly])
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        size = seg["size"]
        if list(size) != [h, w]:
            raise KsegError(f"{where}: RLE size {list(size)} (HxW) is not the image's {h}x{w}")
        if isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg["counts"], (str, bytes)):
            rle = {"size": [h, w], "counts": seg["counts"]}
        else:
            raise KsegError(f"{where}: RLE counts must be a list of run lengths or a compressed string")
    else:
        raise KsegError(f"{where}: segmentation must be polygons [[x1, y1, x2, y2, ...], ...] or RLE")
    try:
        m = mask_utils.decode(rle)
    except Exception as err:  # pycocotools raises plain Exceptions for corrupt counts
        raise KsegError(f"{where}: cannot decode the RLE ({err})") from None
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != (h, w):
        raise KsegError(f"{where}: decoded mask is {m.shape[0]}x{m.shape[1]}, the image is {h}x{w}")
    return m.astype(bool)


def import_coco(annotations_json, images_dir, out, overwrite: bool = False, crowd: str = "ignore") -> dict:
    """Import a COCO instance (or stuff) JSON and its images into ``out``.

    Categories, sorted by id, become ids 1..K (0 = background; a category named
    ``background`` becomes id 0). Segmentations (polygons, uncompressed or
    compressed RLE) are decoded with pycocotools and painted largest first, so
    small objects stay on top. Crowd regions (``iscrowd=1``) are painted first as
    unknown (255) with ``crowd="ignore"``, or as their category with
    ``crowd="class"``. Images without annotations get an all-background mask.

    Args:
        annotations_json: the COCO JSON file.
        images_dir: the folder of the images (``file_name`` is relative to it);
            None: the JSON's folder.
        out: the output folder.
        overwrite: replace the output's images/, masks/, classes.txt and palette.json.
        crowd: "ignore" or "class".

    Returns ``{"out", "class_names", "images", "annotations", "empty_images", "crowd", "notes"}``.
    """
    if crowd not in ("ignore", "class"):
        raise KsegError(f"crowd={crowd!r}: expected 'ignore' or 'class'")
    path = Path(annotations_json).expanduser()
    if not path.is_file():
        raise KsegError(f"{path}: no such file")
    images_dir = Path(images_dir).expanduser() if images_dir is not None else path.parent
    if not images_dir.is_dir():
        raise KsegError(f"{images_dir}: no such folder")
    doc = _load_json(path)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "categories")):
        raise KsegError(f"{path}: not a COCO file (needs 'images', 'annotations' and 'categories' lists)")
    anns = doc.get("annotations") or []
    if not isinstance(anns, list):
        raise KsegError(f"{path}: 'annotations' must be a list")
    if any(isinstance(a, dict) and "segments_info" in a for a in anns[:1]):
        raise KsegError(f"{path}: a COCO panoptic file; kseg imports instance or stuff annotations")
    cats = {}
    for c in doc["categories"]:
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise KsegError(f"{path}: each category needs an id and a name; got {c!r}")
        if c["id"] in cats:
            raise KsegError(f"{path}: category id {c['id']} appears twice")
        cats[c["id"]] = c["name"]
    if not cats:
        raise KsegError(f"{path}: no categories")
    class_names = ["background"]
    cat_ids: dict = {}
    ignored = []
    for cid in sorted(cats, key=lambda v: (str(type(v)), v)):
        name = cats[cid]
        if _is_background(name):
            class_names[0] = name
            cat_ids[cid] = 0
        elif _is_ignore(name):
            cat_ids[cid] = IGNORE_ID
            ignored.append(name)
        else:
            cat_ids[cid] = len(class_names)
            class_names.append(name)
    _check_classes(class_names, path)
    imgs = {}
    for im in doc["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise KsegError(f"{path}: each image needs an id and a file_name; got {im!r}")
        if im["id"] in imgs:
            raise KsegError(f"{path}: image id {im['id']} appears twice")
        imgs[im["id"]] = im
    by_image: dict = {k: [] for k in imgs}
    for a in anns:
        if not isinstance(a, dict):
            raise KsegError(f"{path}: each annotation must be an object; got {a!r}")
        if a.get("image_id") not in imgs:
            raise KsegError(f"{path}: annotation {a.get('id')}: image id {a.get('image_id')!r} is not in images")
        if a.get("category_id") not in cat_ids:
            raise KsegError(f"{path}: annotation {a.get('id')}: category id {a.get('category_id')!r} is not in "
                            f"categories")
        by_image[a["image_id"]].append(a)
    colors = voc_colormap()[: len(class_names)]
    pal = _palette(colors)
    empty = no_seg = n_crowd = 0
    if not imgs:
        raise KsegError(f"{path}: no images")
    with _Output(out, overwrite, path) as w:
        for iid, info in imgs.items():
            rel = info["file_name"]
            img = images_dir / rel
            if not img.is_file():
                alt = images_dir / Path(rel.replace("\\", "/")).name
                if not alt.is_file():
                    raise KsegError(f"{path}: image {iid}: missing image {img}")
                img = alt
            h, wd = _image_size(img)
            jh, jw = info.get("height"), info.get("width")
            if isinstance(jh, int) and isinstance(jw, int) and (jh, jw) != (h, wd):
                raise KsegError(f"{path}: image {iid} ({rel}): height x width is {jh}x{jw} but {img} is {h}x{wd}")
            label = np.zeros((h, wd), np.uint8)
            painted = []
            for a in by_image[iid]:
                m = _coco_mask(path, a, h, wd)
                if m is None:
                    no_seg += 1
                    continue
                is_crowd = bool(a.get("iscrowd", 0))
                n_crowd += is_crowd
                first = is_crowd and crowd == "ignore"
                cid = IGNORE_ID if first else cat_ids[a["category_id"]]
                painted.append((0 if first else 1, -int(m.sum()), len(painted), m, cid))
            if not painted:
                empty += 1
            for *_, m, cid in sorted(painted, key=lambda t: t[:3]):
                label[m] = cid
            w.add(_stem(rel), f"{path}: image {iid}", img, label, pal)
        if no_seg and no_seg == len(anns):
            raise KsegError(f"{path}: no annotation has a segmentation (bounding boxes only?)")
        notes = []
        if empty:
            notes.append(f"{empty} of the {len(imgs)} images have no annotations: their masks are all background")
        if no_seg:
            notes.append(f"skipped {no_seg} annotation(s) without a segmentation (bounding box only)")
        if n_crowd and crowd == "ignore":
            notes.append(f"{n_crowd} crowd region(s) (iscrowd=1) marked unknown ({IGNORE_ID}); "
                         f"--crowd class (crowd='class') paints them as their category")
        if ignored:
            notes.append(f"category(ies) {', '.join(ignored)} mark unknown pixels ({IGNORE_ID})")
        if w.converted:
            notes.append(f"{w.converted} image(s) re-encoded as PNG (kseg reads {', '.join(IMAGE_EXTS)})")
        out_path = w.finish(class_names, colors)
    result = {"out": out_path, "class_names": class_names, "images": len(imgs), "annotations": len(anns) - no_seg,
              "empty_images": empty, "crowd": n_crowd}
    return _summary(result, path, notes)


# --------------------------------------------------------------------------- detection and CLI


def detect_format(src) -> str:
    """``"cvat"``, ``"coco"`` or ``"labelme"`` for a source; :class:`KsegError` when it is none of them."""
    src = Path(src).expanduser()
    if not src.exists():
        raise KsegError(f"{src}: no such file or folder")
    if src.is_file() and zipfile.is_zipfile(src):
        return "cvat"
    if src.is_dir():
        if (src / "labelmap.txt").is_file() or any(
                (p / "labelmap.txt").is_file() for p in src.iterdir() if p.is_dir()):
            return "cvat"
        jsons = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() == ".json")
        for j in jsons:
            try:
                doc = json.loads(j.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                continue
            if isinstance(doc, dict) and "shapes" in doc:
                return "labelme"
            if isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys():
                raise KsegError(f"{src}: holds the COCO file {j.name}: pass the file itself "
                                f"(and its images folder with --images)")
    elif src.suffix.lower() == ".json":
        doc = _load_json(src)
        if isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys():
            return "coco"
        if isinstance(doc, dict) and "shapes" in doc:
            return "labelme"
    raise KsegError(f"{src}: cannot tell the annotation format: expected a CVAT export (a zip or a folder with "
                    f"labelmap.txt), a COCO .json or a folder of LabelMe .json files")


def import_annotations(src, out, format: str | None = None, **kw) -> dict:  # noqa: A002 (the CLI's --format)
    """Import ``src`` into ``out``, detecting the format (see :func:`detect_format`) unless given.

    Keyword arguments go to the importer: ``overwrite`` (all), ``labels`` and
    ``line_width`` (LabelMe), ``images`` (CVAT and COCO: the images folder),
    ``crowd`` (COCO).
    """
    fmt = format or detect_format(src)
    if fmt not in FORMATS:
        raise KsegError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    allowed = {"labelme": {"overwrite", "labels", "line_width"}, "cvat": {"overwrite", "images"},
               "coco": {"overwrite", "images", "crowd"}}[fmt]
    extra = sorted(k for k, v in kw.items() if v is not None and k not in allowed)
    if extra:
        raise KsegError(f"{src}: {', '.join(extra)} does not apply to a {fmt} source")
    kw = {k: v for k, v in kw.items() if v is not None}
    if fmt == "labelme":
        return import_labelme(src, out, **kw)
    if fmt == "cvat":
        return import_cvat(src, out, **kw)
    images = kw.pop("images", None)
    return import_coco(src, images, out, **kw)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kseg.data.annotations",
        description="Import LabelMe, CVAT ('Segmentation mask 1.1') or COCO annotations into kseg's folder "
                    "layout (images/, masks/, classes.txt, palette.json).")
    p.add_argument("src", help="a folder of LabelMe .json files, a CVAT export (zip or folder) or a COCO .json")
    p.add_argument("--out", required=True, help="the output folder (new or empty)")
    p.add_argument("--format", choices=FORMATS, help="the source's format (default: detected)")
    p.add_argument("--images", help="the images folder (COCO; CVAT exports without images)")
    p.add_argument("--labels", help="LabelMe: a labels file, one class a line (labelme2voc's labels.txt)")
    p.add_argument("--crowd", choices=("ignore", "class"), help="COCO crowd regions: unknown (default) or class")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output's images/, masks/, classes.txt and palette.json")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _cli_kw(args) -> dict:
    kw = {"overwrite": args.overwrite or None}
    if args.images is not None:
        kw["images"] = args.images
    if args.labels is not None:
        kw["labels"] = args.labels
    if args.crowd is not None:
        kw["crowd"] = args.crowd
    return kw


@cli_entry
def main(argv=None):
    args = _parser().parse_args(argv)
    fmt = args.format or detect_format(args.src)
    flags = {"images": "--images", "labels": "--labels", "crowd": "--crowd"}
    allowed = {"labelme": {"labels"}, "cvat": {"images"}, "coco": {"images", "crowd"}}[fmt]
    for key, flag in flags.items():
        if getattr(args, key) is not None and key not in allowed:
            raise KsegError(f"{flag} does not apply to a {fmt} source ({args.src})")
    import_annotations(args.src, args.out, format=fmt, **_cli_kw(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
