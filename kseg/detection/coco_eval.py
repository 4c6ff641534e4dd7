"""COCO box and mask AP of kseg's instance predictions, computed by pycocotools.

:func:`coco_evaluate` turns per-image predictions into COCO results and runs ``COCOeval`` once per IoU
type ("bbox", "segm") with its default parameters (IoU 0.50:0.05:0.95, 101 recall points, at most
100 detections an image, area ranges small < 32**2 <= medium < 96**2 <= large), so the figures are
pycocotools' own ``stats``. As Detectron2's ``COCOEvaluator`` does:

- classes are contiguous indices, ``category_ids[k]`` the COCO category of class ``k`` (default: the
  ground truth's category ids sorted, class 1 the smallest id, as :func:`kseg.data.instances.read_instances`
  numbers them); class 0 is background / padding and its detections are left out;
- boxes ``(x1, y1, x2, y2)`` become COCO's ``[x, y, w, h]``; masks (bool, or probabilities: a pixel
  belongs when >= 0.5) become compressed RLE with ``pycocotools.mask.encode``;
- mask results carry no box, so pycocotools takes their area (small / medium / large) from the mask;
- per-class AP is ``eval["precision"][:, :, k, area=all, maxDets=100]`` averaged where it is > -1.

Figures are in 0..1; one that pycocotools reports as -1 (no ground truth in that area range or class)
is None. Predictions are in the coordinates of the ground truth's images (see
:func:`kseg.data.instances.restore_size` for a resized model input).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def load_coco(gt):
    """A ``pycocotools.coco.COCO`` of ``gt`` (a COCO object, or the path of a COCO instances JSON)."""
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return _with_areas(gt)
    path = Path(gt).expanduser()
    if not path.is_file():
        raise KsegError(f"{path}: no such file")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return _with_areas(COCO(str(path)))
        except ValueError as err:
            raise KsegError(f"{path}: malformed JSON ({err})") from None
        except (KeyError, TypeError, AssertionError):
            raise KsegError(f"{path}: not a COCO instances file (needs images, annotations and categories)") from None


def _with_areas(coco):
    """``coco`` with an ``area`` on every annotation (COCOeval needs it): the mask's pixels, else the box's area."""
    import pycocotools.mask as mask_utils

    for a in coco.anns.values():
        if "area" not in a:
            seg = a.get("segmentation")
            a["area"] = float(mask_utils.area(coco.annToRLE(a))) if seg else float(a["bbox"][2] * a["bbox"][3])
    return coco


def _masks_rle(masks, hw, where: str) -> list:
    import pycocotools.mask as mask_utils

    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1:] != tuple(hw):
        raise KsegError(f"{where}: masks are {masks.shape}; expected [N, {hw[0]}, {hw[1]}] (the image's size)")
    binary = masks if masks.dtype == bool else masks >= 0.5
    rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def coco_results(predictions, gt, category_ids=None, iou_type: str = "bbox") -> list[dict]:
    """COCO result dicts (``image_id``, ``category_id``, ``score`` and ``bbox`` or ``segmentation``).

    Args:
        predictions: image id -> ``{"boxes": [N, 4] xyxy, "scores": [N], "classes": [N], "masks": [N, H, W]}``
            (``masks`` only for "segm").
        gt: a COCO object or the path of the ground truth's JSON.
        category_ids: ``category_ids[k]`` is class ``k``'s COCO category id (index 0 unused); None: the
            ground truth's ids sorted.
        iou_type: "bbox" or "segm".
    """
    coco = load_coco(gt)
    cat_ids = _category_ids(coco, category_ids)
    out = []
    for image_id, pred in predictions.items():
        where = f"predictions for image {image_id}"
        if image_id not in coco.imgs:
            raise KsegError(f"{where}: the ground truth has no image with that id")
        classes = np.asarray(pred["classes"]).reshape(-1).astype(np.int64)
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)
        if len(scores) != len(classes):
            raise KsegError(f"{where}: {len(scores)} scores for {len(classes)} classes")
        if len(classes) and (classes.min() < 0 or classes.max() >= len(cat_ids)):
            raise KsegError(f"{where}: classes must be 0..{len(cat_ids) - 1} (0 = padding); got "
                            f"{classes.min()}..{classes.max()}")
        if iou_type == "bbox":
            boxes = np.asarray(pred["boxes"], np.float64).reshape(-1, 4)
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            values = [{"bbox": [float(v) for v in b]} for b in xywh]
        elif iou_type == "segm":
            if "masks" not in pred:
                raise KsegError(f"{where}: no masks; mask AP (segm) needs them")
            info = coco.imgs[image_id]
            values = [{"segmentation": r} for r in _masks_rle(pred["masks"], (info["height"], info["width"]), where)]
        else:
            raise KsegError(f"iou_type {iou_type!r}: expected one of {', '.join(IOU_TYPES)}")
        if len(values) != len(classes):
            raise KsegError(f"{where}: {len(values)} {'boxes' if iou_type == 'bbox' else 'masks'} for "
                            f"{len(classes)} classes")
        for v, c, s in zip(values, classes, scores):
            if c > 0:
                out.append({"image_id": image_id, "category_id": cat_ids[c], "score": float(s), **v})
    return out


def _category_ids(coco, category_ids) -> list:
    known = sorted(coco.getCatIds())
    if category_ids is None:
        return [0, *known]
    ids = list(category_ids)
    unknown = [c for c in ids[1:] if c not in coco.cats]
    if unknown:
        raise KsegError(f"category_ids {unknown} are not categories of the ground truth ({known})")
    return ids


def _evaluate(coco, results, iou_type: str, image_ids):
    """A ``COCOeval`` evaluated, accumulated and summarised (its printing silenced)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            dt = coco.loadRes(results)
        else:  # loadRes refuses an empty list; no detections score 0 wherever there is ground truth
            dt = COCO()
            dt.dataset = {"images": coco.dataset["images"], "categories": coco.dataset["categories"],
                          "annotations": []}
            dt.createIndex()
        ev = COCOeval(coco, dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _figure(v) -> float | None:
    return None if v is None or v < 0 or np.isnan(v) else float(v)


def per_class_ap(ev) -> dict:
    """Category id -> AP (IoU 0.50:0.95, all areas, 100 detections), None where the class has no ground truth."""
    precision = ev.eval["precision"]  # [IoU, recall, class, area, max detections]
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[cat] = _figure(p.mean()) if p.size else None
    return out


def coco_evaluate(predictions, gt, category_ids=None, iou_types=IOU_TYPES, image_ids=None) -> dict:
    """COCO AP of ``predictions`` against ``gt`` for each of ``iou_types``.

    Args:
        predictions: image id -> ``{"boxes", "scores", "classes", "masks"}`` (see :func:`coco_results`);
            ground-truth images without predictions count their objects as missed.
        gt: a ``pycocotools.coco.COCO`` or the path of a COCO instances JSON.
        category_ids: class index -> COCO category id (index 0 unused); None: the ground truth's ids sorted.
        iou_types: any of "bbox", "segm".
        image_ids: evaluate these ground-truth images only (None: all of them).

    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
    "ARl", "per_class": {category name: AP}}}``.
    """
    coco = load_coco(gt)
    if image_ids is not None:
        missing = sorted(set(image_ids) - set(coco.imgs))
        if missing:
            raise KsegError(f"image_ids {missing[:5]} are not images of the ground truth")
    return evaluate_results(coco, {t: coco_results(predictions, coco, category_ids, t) for t in iou_types}, image_ids)


def evaluate_results(gt, results: dict, image_ids=None) -> dict:
    """:func:`coco_evaluate` of COCO results already made (``{iou_type: coco_results(...)}``, e.g. gathered image
    by image so that no image's masks are kept); the same dict out."""
    coco = load_coco(gt)
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    out = {}
    for iou_type, found in results.items():
        ev = _evaluate(coco, found, iou_type, image_ids)
        out[iou_type] = {name: _figure(v) for name, v in zip(STATS, ev.stats)}
        out[iou_type]["per_class"] = {names[c]: ap for c, ap in per_class_ap(ev).items()}
    return out
