"""Which format a source is, and importing it with the right importer."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from kseg.data.annotations.coco import import_coco
from kseg.data.annotations.common import _load_json
from kseg.data.annotations.cvat import import_cvat
from kseg.data.annotations.labelme import import_labelme
from kseg.errors import KsegError

FORMATS = ("labelme", "cvat", "coco")


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


