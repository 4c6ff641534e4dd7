"""Panoptic segmentation: COCO panoptic PNGs, panoptic quality (PQ) and the Panoptic FPN merge.

A panoptic result of one image is a pair ``(id_map, segments_info)``: ``id_map`` is an ``HxW``
integer array of segment ids (0 = void: no segment), ``segments_info`` a list of dicts with at
least ``id`` and ``category_id`` (and ``iscrowd`` for ground truth), as in COCO's panoptic format.

- :func:`id2rgb`, :func:`rgb2id`, :func:`write_panoptic_png`, :func:`read_panoptic_png`: the COCO
  panoptic PNG, ``id = R + 256 * G + 256**2 * B`` (panopticapi's ``rgb2id`` / ``id2rgb``). The
  shapes generator (:mod:`kseg.data.shapes`) writes its PNGs with these.
- :func:`panoptic_quality`: PQ, SQ and RQ overall, for things and stuff apart and per category,
  computed as panopticapi's ``pq_compute`` does: a ground-truth and a predicted segment of the same
  category match when their IoU is above 0.5, the IoU's union leaving out the predicted segment's
  pixels that are void in the ground truth; unmatched ground-truth segments are false negatives
  except crowd ones; an unmatched prediction is not a false positive when more than half of it lies
  on void pixels plus the ground truth's crowd region of its category. A category with no true
  positive, false positive or false negative scores 0 in ``per_class`` and is left out of the
  averages (``n`` counts the categories averaged). Deliberate differences: ground-truth areas are
  counted in the id map (panopticapi reads them from the JSON's ``area``; they agree for a
  consistent file), errors are :class:`~kseg.errors.KsegError` instead of ``KeyError``, and a group
  with no category to average (``n == 0``) scores ``None`` where panopticapi divides by zero.
- :func:`combine_semantic_instances`: Detectron2's ``combine_semantic_and_instance_outputs``, the
  standard Panoptic FPN merge.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import zip_longest

import numpy as np

from kseg.errors import KsegError

VOID = 0
OFFSET = 256 * 256 * 256  # panopticapi's: ids are below 2**24, so gt * OFFSET + pred is a unique pair


def id2rgb(id_map) -> np.ndarray:
    """``HxW`` segment ids -> ``HxWx3`` uint8 RGB (``R = id % 256``, ``G = id // 256 % 256``, ...)."""
    ids = np.asarray(id_map, np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= OFFSET:
        raise KsegError(f"panoptic ids must lie in 0..{OFFSET - 1}; got {ids.min()}..{ids.max()}")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def rgb2id(rgb) -> np.ndarray:
    """``HxWx3`` RGB -> ``HxW`` int32 segment ids (``R + 256 * G + 256**2 * B``)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise KsegError(f"a panoptic RGB image must be HxWx3; got shape {rgb.shape}")
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_panoptic_png(path, id_map) -> None:
    """Write ``id_map`` as a COCO panoptic PNG (RGB) at ``path``."""
    import cv2

    rgb = id2rgb(id_map)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise KsegError(f"{path}: cannot write the panoptic PNG")


def read_panoptic_png(path) -> np.ndarray:
    """The ``HxW`` int32 segment ids of a COCO panoptic PNG."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if bgr is None:
        raise KsegError(f"{path}: not a readable PNG")
    if bgr.dtype != np.uint8:
        raise KsegError(f"{path}: a panoptic PNG has 8-bit RGB channels; this one is {bgr.dtype}")
    return rgb2id(bgr[..., ::-1])


def _id_map(m, what: str) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim == 3:
        m = rgb2id(m)
    if m.ndim != 2:
        raise KsegError(f"{what}: an id map must be HxW ids or HxWx3 RGB; got shape {m.shape}")
    return m.astype(np.int64)


def _segments(info, what: str) -> dict:
    segs = {}
    for s in info:
        if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
            raise KsegError(f"{what}: each segment needs an id and a category_id; got {s!r}")
        if s["id"] in segs:
            raise KsegError(f"{what}: segment id {s['id']} appears twice")
        segs[int(s["id"])] = s
    return segs


def _pred_areas(pred_map, pred_segs, categories, what: str) -> dict:
    """Each predicted segment's area; panopticapi's sanity checks on the prediction."""
    ids, counts = np.unique(pred_map, return_counts=True)
    areas = {}
    for i, n in zip(ids.tolist(), counts.tolist()):
        if i == VOID and i not in pred_segs:
            continue
        if i not in pred_segs:
            raise KsegError(f"{what}: segment id {i} is in the id map and not in segments_info")
        if pred_segs[i]["category_id"] not in categories:
            raise KsegError(f"{what}: segment {i} has unknown category_id {pred_segs[i]['category_id']}")
        areas[i] = n
    missing = sorted(set(pred_segs) - set(areas))
    if missing:
        raise KsegError(f"{what}: segment id(s) {missing} are in segments_info and not in the id map")
    return areas


def _image_stats(stats, pred, gt, categories, what: str) -> None:
    """Add one image's true positives (and their IoU), false positives and negatives to ``stats``."""
    pred_map, gt_map = _id_map(pred[0], f"{what} (prediction)"), _id_map(gt[0], f"{what} (ground truth)")
    if pred_map.shape != gt_map.shape:
        raise KsegError(f"{what}: the prediction is {pred_map.shape}, the ground truth {gt_map.shape}")
    pred_segs, gt_segs = _segments(pred[1], f"{what} (prediction)"), _segments(gt[1], f"{what} (ground truth)")
    pred_area = _pred_areas(pred_map, pred_segs, categories, f"{what} (prediction)")
    pairs, counts = np.unique(gt_map * OFFSET + pred_map, return_counts=True)
    inter = {(int(p // OFFSET), int(p % OFFSET)): int(n) for p, n in zip(pairs, counts)}
    gt_area = defaultdict(int)
    for (g, _), n in inter.items():
        gt_area[g] += n
    gt_matched, pred_matched = set(), set()
    for (g, p), n in inter.items():
        if g not in gt_segs or p not in pred_segs or gt_segs[g].get("iscrowd", 0) == 1:
            continue
        cat = gt_segs[g]["category_id"]
        if cat != pred_segs[p]["category_id"]:
            continue
        iou = n / (pred_area[p] + gt_area[g] - n - inter.get((VOID, p), 0))
        if iou > 0.5:
            stats[cat][0] += 1
            stats[cat][3] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd = {}
    for g, s in gt_segs.items():
        if g in gt_matched:
            continue
        if s.get("iscrowd", 0) == 1:
            crowd[s["category_id"]] = g
            continue
        stats[s["category_id"]][2] += 1
    for p, s in pred_segs.items():
        if p in pred_matched:
            continue
        ignored = inter.get((VOID, p), 0)
        if s["category_id"] in crowd:
            ignored += inter.get((crowd[s["category_id"]], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stats[s["category_id"]][1] += 1


def _average(stats, categories, isthing):
    """``({"pq", "sq", "rq", "n"}, per-category {"pq", "sq", "rq"})`` (panopticapi's ``pq_average``)."""
    total = np.zeros(3)
    n = 0
    per_class = {}
    for cat, info in categories.items():
        if isthing is not None and (info.get("isthing", 0) == 1) != isthing:
            continue
        tp, fp, fn, iou = stats[cat]
        if tp + fp + fn == 0:
            per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        n += 1
        denom = tp + 0.5 * fp + 0.5 * fn
        per_class[cat] = {"pq": iou / denom, "sq": iou / tp if tp else 0.0, "rq": tp / denom}
        total += [per_class[cat]["pq"], per_class[cat]["sq"], per_class[cat]["rq"]]
    avg = {k: (float(v / n) if n else None) for k, v in zip(("pq", "sq", "rq"), total)}
    return {**avg, "n": n}, per_class


def _categories(categories) -> dict:
    if isinstance(categories, dict):
        categories = list(categories.values())
    cats = {}
    for c in categories:
        if not isinstance(c, dict) or "id" not in c:
            raise KsegError(f"each category needs an id (and isthing); got {c!r}")
        cats[c["id"]] = c
    if not cats:
        raise KsegError("panoptic_quality: no categories")
    return cats


def panoptic_quality(pred, gt, categories) -> dict:
    """PQ, SQ and RQ of predictions against ground truth, as panopticapi's ``pq_compute``.

    Args:
        pred: one ``(id_map, segments_info)`` pair per image (any iterable; a generator keeps one image in
            memory at a time); ``id_map`` is ``HxW`` ids or a panoptic PNG's ``HxWx3`` RGB.
        gt: the ground truth's pairs, in the same order (segments may carry ``iscrowd``; void = 0).
        categories: COCO panoptic categories (a list of ``{"id", "isthing", ...}`` or a dict id -> one).

    Returns ``{"All": {"pq", "sq", "rq", "n"}, "Things": {...}, "Stuff": {...}, "per_class": {category
    id: {"pq", "sq", "rq"}}}`` with values in 0..1.
    """
    cats = _categories(categories)
    stats = defaultdict(lambda: [0, 0, 0, 0.0])  # category -> [tp, fp, fn, sum of matched IoUs]
    n_pred = n_gt = 0
    for i, (p, g) in enumerate(zip_longest(pred, gt)):  # lazily: one image's maps in memory at a time
        n_pred, n_gt = n_pred + (p is not None), n_gt + (g is not None)
        if p is not None and g is not None:
            _image_stats(stats, p, g, cats, f"panoptic image {i}")
    if n_pred != n_gt:
        raise KsegError(f"panoptic_quality: {n_pred} predictions for {n_gt} ground-truth images")
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = _average(stats, cats, isthing)
        if name == "All":
            results["per_class"] = per_class
    return results


def combine_semantic_instances(instance_masks, scores, classes, semantic_map, overlap_threshold=0.5,
                               stuff_area_threshold=4096, instance_score_threshold=0.5, stuff_classes=None):
    """Merge instance and semantic predictions into one panoptic result (Panoptic FPN's merge).

    Detectron2's ``combine_semantic_and_instance_outputs``: instances are taken by descending score,
    stopping at the first one scoring below ``instance_score_threshold``; an instance whose mask is
    empty, or overlaps pixels already assigned by more than ``overlap_threshold`` of its area, is
    skipped, and otherwise takes its still unassigned pixels as a new segment. Then each stuff class
    of ``semantic_map`` takes its still unassigned pixels as one segment when they number at least
    ``stuff_area_threshold``. Pixels left over are void (0).

    Args:
        instance_masks: ``[N, H, W]`` bool masks, or probabilities (a pixel belongs when >= 0.5, as
            Detectron2's mask pasting thresholds them).
        scores: ``[N]`` instance scores. classes: ``[N]`` their classes (become ``category_id``).
        semantic_map: ``[H, W]`` semantic labels.
        stuff_classes: the labels of ``semantic_map`` that are stuff; None: every label but 0 (Detectron2's
            convention: its semantic head's class 0 stands for all things).

    Returns ``(id_map, segments_info)``: ``id_map`` ``[H, W]`` int32, segment ids 1, 2, ... in the order
    made; ``segments_info`` dicts with ``id``, ``isthing``, ``category_id``, ``area`` and, for
    instances, ``score`` and ``instance_id`` (the instance's index in the inputs).
    """
    masks = np.asarray(instance_masks)
    masks = masks if masks.dtype == bool else masks >= 0.5
    scores, classes = np.asarray(scores, np.float64).reshape(-1), np.asarray(classes).reshape(-1)
    semantic = np.asarray(semantic_map)
    if masks.ndim != 3 or masks.shape[1:] != semantic.shape or not len(masks) == len(scores) == len(classes):
        raise KsegError(f"combine_semantic_instances: masks {masks.shape}, scores {scores.shape}, classes "
                        f"{classes.shape} and semantic map {semantic.shape} do not agree ([N,H,W], [N], [N], [H,W])")
    id_map = np.zeros(semantic.shape, np.int32)
    segments = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < instance_score_threshold:
            break
        mask = masks[i]
        area = int(mask.sum())
        if area == 0:
            continue
        taken = id_map > 0
        overlap = int((mask & taken).sum())
        if overlap / area > overlap_threshold:
            continue
        mask = mask & ~taken
        id_map[mask] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "isthing": True, "score": float(scores[i]),
                         "category_id": int(classes[i]), "instance_id": int(i), "area": int(mask.sum())})
    labels = np.unique(semantic).tolist()
    stuff = [v for v in labels if v != 0] if stuff_classes is None else [v for v in labels if v in set(stuff_classes)]
    for label in stuff:
        mask = (semantic == label) & (id_map == 0)
        area = int(mask.sum())
        if area < stuff_area_threshold:
            continue
        id_map[mask] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "isthing": False, "category_id": int(label), "area": area})
    return id_map, segments
