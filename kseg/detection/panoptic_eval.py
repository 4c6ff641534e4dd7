"""Panoptic quality of a predictor over a dataset in COCO panoptic format (``kseg shapes``' splits are one).

:func:`evaluate_panoptic` reads the panoptic JSON (``images``, ``annotations`` with ``file_name`` and
``segments_info``, ``categories``), runs the predictor on each annotated image, reads the ground-truth
panoptic PNG and scores everything with :func:`~kseg.detection.panoptic.panoptic_quality` (panopticapi's
``pq_compute``), one image in memory at a time.
"""

from __future__ import annotations

import json
import sys
from itertools import tee
from pathlib import Path

import numpy as np

from kseg.errors import KsegError


def read_panoptic_json(path) -> dict:
    """The COCO panoptic document at ``path``, checked for ``images``, ``annotations`` and ``categories``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KsegError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KsegError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                   "categories")):
        raise KsegError(f"{path}: a COCO panoptic file needs lists 'images', 'annotations' and 'categories'")
    return doc


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise KsegError(f"{path}: no such image or not readable")
    return bgr[..., ::-1]


def _pairs(predictor, doc: dict, json_path: Path, panoptic_dir: Path, images_dir: Path, limit, progress):
    """``((pred id map, segments), (gt id map, segments))`` per annotated image, read and predicted lazily."""
    from kseg.detection.panoptic import read_panoptic_png

    images = {im.get("id"): im for im in doc["images"]}
    anns = doc["annotations"][:limit] if limit else doc["annotations"]
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict) or ann.get("image_id") not in images or "file_name" not in ann:
            raise KsegError(f"{json_path}: annotation {i} needs an image_id of one of its images and a file_name")
        image = _read_rgb(images_dir / images[ann["image_id"]]["file_name"])
        gt = read_panoptic_png(panoptic_dir / ann["file_name"])
        if gt.shape != image.shape[:2]:
            raise KsegError(f"{panoptic_dir / ann['file_name']}: {gt.shape[1]}x{gt.shape[0]} pixels, its image "
                            f"{image.shape[1]}x{image.shape[0]}")
        pred = predictor.predict(image)
        if progress:
            print(f"\rpanoptic: {i + 1}/{len(anns)} images", end="", file=sys.stderr, flush=True)
        yield (pred.id_map, pred.segments_info), (gt, ann.get("segments_info", []))
    if progress:
        print(file=sys.stderr)


def evaluate_panoptic(predictor, panoptic_json, panoptic_dir=None, images_dir=None, limit: int | None = None,
                      progress: bool = False) -> dict:
    """PQ, SQ and RQ of ``predictor`` (``predict(rgb) -> Panoptic``) on a COCO panoptic dataset.

    Args:
        panoptic_json: the COCO panoptic JSON. panoptic_dir: its PNGs (default: ``panoptic`` beside the
            JSON, ``kseg shapes``' layout). images_dir: the photos (default: ``images`` beside the JSON).
        limit: score only the first ``limit`` annotated images. progress: count images on stderr.

    The predictor's segments must carry the dataset's category ids
    (:meth:`~kseg.detection.panoptic_predict.PanopticPredictor.from_categories` makes one that does).
    Returns ``{"All", "Things", "Stuff"}`` (each ``{"pq", "sq", "rq", "n"}``, values 0..1, None where a group has
    no category to average), ``per_class`` ``{category name: {"id", "pq", "sq", "rq"}}`` and ``images``.
    """
    from kseg.detection.panoptic import panoptic_quality

    json_path = Path(panoptic_json)
    doc = read_panoptic_json(json_path)
    panoptic_dir = Path(panoptic_dir) if panoptic_dir else json_path.parent / "panoptic"
    images_dir = Path(images_dir) if images_dir else json_path.parent / "images"
    for folder, what in ((panoptic_dir, "panoptic PNG"), (images_dir, "image")):
        if not folder.is_dir():
            raise KsegError(f"{folder}: no such {what} folder")
    if not doc["annotations"]:
        raise KsegError(f"{json_path}: no annotations to evaluate")
    preds, gts = tee(_pairs(predictor, doc, json_path, panoptic_dir, images_dir, limit, progress))
    result = panoptic_quality((p for p, _ in preds), (g for _, g in gts), doc["categories"])  # in lockstep
    names = {c["id"]: c.get("name", str(c["id"])) for c in doc["categories"]}
    per_class = {names[cid]: {"id": cid, **v} for cid, v in result["per_class"].items()}
    return {"All": result["All"], "Things": result["Things"], "Stuff": result["Stuff"], "per_class": per_class,
            "images": len(doc["annotations"][:limit] if limit else doc["annotations"])}

