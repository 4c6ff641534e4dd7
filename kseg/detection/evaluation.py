"""``kseg evaluate`` for instance models: COCO box and mask AP on a COCO instances JSON, and the worst images.

:func:`evaluate_instances` runs an instance predictor (:func:`kseg.detection.prediction.load_instance_predictor`)
on every image of a COCO instances file (:func:`kseg.data.instances.read_instances`) at the photo's own size and
scores all its detections with pycocotools (:mod:`kseg.detection.coco_eval`: AP at IoU 0.50:0.95, AP50, AP75,
by area, AR, per class), for boxes and masks. Each image's results are made as it is predicted, so no image's
masks are kept. The model's classes are matched to the file's categories by name when the model names all of
them (``maskrcnn-coco`` on COCO; a run's ``class_names``); else by index when the counts agree (class ``k`` is
the ``k``-th category by id); detections of classes the file does not have are left out.

Each image also gets an F1 at IoU 0.5: its detections scoring at least ``score_threshold`` matched greedily (best
score first) to unmatched ground truth of the same class by mask IoU >= 0.5; an unmatched detection lying half or
more inside a crowd region of its class is ignored (COCO's rule), as are the crowd regions themselves. The
``worst`` images by F1 are drawn as one picture, a row each: the image, its ground truth, the detections.

:func:`write_instance_report` writes ``report.json`` and ``worst.png`` (atomically, marked as kseg's; a file of
that name that kseg evaluate did not write is never replaced).
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

SOFTWARE = "kseg.evaluate"
IOU = 0.5
DISPLAY = 320  # the short side, in pixels, small images are enlarged to in the worst-images picture


def class_mapping(model_names, gt_names, model, coco_json) -> tuple[np.ndarray, str]:
    """``(model class -> ground-truth class index (0: not in the file), "names" or "indices")``."""
    gt_index = {n: k for k, n in enumerate(gt_names) if k}
    if all(n in model_names for n in gt_names[1:]):
        return np.array([gt_index.get(n, 0) if k else 0 for k, n in enumerate(model_names)], np.int64), "names"
    if len(model_names) == len(gt_names):
        return np.arange(len(gt_names), dtype=np.int64), "indices"
    raise KsegError(f"{model}: its {len(model_names) - 1} classes do not name the {len(gt_names) - 1} categories of "
                    f"{coco_json} ({', '.join(gt_names[1:4])}{', ...' if len(gt_names) > 4 else ''}), and the counts "
                    f"differ")


def image_f1(classes, masks, gt_classes, gt_masks, crowd) -> dict:
    """F1 at mask IoU 0.5 of one image's detections (``classes`` [P], bool ``masks`` [P, H, W], best first)
    against its ground truth (see the module's docstring): ``{"f1", "tp", "fp", "fn"}``."""
    p, g = len(classes), len(gt_classes)
    pixels = int(np.prod(gt_masks.shape[1:]))
    pm = masks.reshape(p, pixels).astype(np.float32)
    gm = gt_masks.reshape(g, pixels).astype(np.float32)
    inter = pm @ gm.T
    union = pm.sum(1)[:, None] + gm.sum(1)[None] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    inside = inter / np.maximum(pm.sum(1)[:, None], 1)  # the part of each detection in each ground truth
    same = classes[:, None] == gt_classes[None]
    taken = np.zeros(g, bool)
    tp = fp = 0
    for i in range(p):
        cand = np.where(same[i] & ~crowd & ~taken & (iou[i] >= IOU), iou[i], -1.0)
        if g and cand.max() >= IOU:
            taken[int(cand.argmax())] = True
            tp += 1
        elif not (g and (same[i] & crowd & (inside[i] >= IOU)).any()):
            fp += 1
    fn = int((~crowd).sum()) - tp
    return {"f1": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn), "tp": tp, "fp": fp, "fn": fn}


def evaluate_instances(predictor, coco_json, images_dir=None, model="model", worst: int = 6, limit=None,
                       score_threshold: float = 0.5, progress: bool = False) -> dict:
    """Score ``predictor`` on the COCO instances file ``coco_json`` (see the module's docstring).

    Returns the report (``mask_ap``, ``box_ap``, ``mask`` and ``box``: pycocotools' figures and ``per_class``,
    ``per_image``, ``worst``, ...) and, under ``"_worst"``, the rows of the worst-images picture."""
    from kseg.data.instances import read_instances
    from kseg.detection.coco_eval import coco_results, evaluate_results, load_coco

    t0 = time.time()
    record = read_instances(coco_json, images_dir)
    coco = load_coco(record.path)
    mapping, matched_by = class_mapping(predictor.class_names, record.class_names, model, record.path)
    n = len(record) if limit is None else min(int(limit), len(record))
    results, per_image, rows = {"bbox": [], "segm": []}, [], []
    for i in range(n):
        image, gt_classes, gt_masks, crowd = record.load(i)
        found = predictor.predict(image)
        classes = mapping[found.classes]
        keep = classes > 0
        pred = {"boxes": found.boxes[keep], "scores": found.scores[keep], "classes": classes[keep],
                "masks": found.masks[keep] >= 0.5}
        iid = record.images[i]["id"]
        for iou_type in results:
            results[iou_type] += coco_results({iid: pred}, coco, record.category_ids, iou_type)
        above = pred["scores"] >= score_threshold
        score = image_f1(pred["classes"][above], pred["masks"][above], gt_classes, gt_masks, crowd)
        per_image.append({"id": iid, "file": Path(record.images[i]["path"]).name, **score})
        row = (-score["f1"], -i, (image, (gt_classes, gt_masks, crowd), {k: v[above] for k, v in pred.items()},
                                  per_image[-1]))
        if len(rows) < worst:
            heapq.heappush(rows, row)
        elif worst:
            heapq.heappushpop(rows, row)
        if progress:
            print(f"\rkseg: {i + 1}/{n} images", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    scores = evaluate_results(coco, results, [record.images[i]["id"] for i in range(n)])
    rows = [r[2] for r in sorted(rows, reverse=True)]
    return {"software": SOFTWARE, "task": "instance segmentation", "model": str(model), "coco": str(record.path),
            "images_dir": str(Path(record.images[0]["path"]).parent), "images": n,
            "mask_ap": scores["segm"]["AP"], "box_ap": scores["bbox"]["AP"], "mask": scores["segm"],
            "box": scores["bbox"], "classes_matched_by": matched_by, "score_threshold": score_threshold,
            "per_image": per_image, "worst": [r[3]["id"] for r in rows], "seconds": round(time.time() - t0, 2),
            "_worst": rows, "_names": record.class_names}


def _ap(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_instance_table(report: dict) -> str:
    """Per-class mask and box AP, and the summary line ``kseg: mask AP 0.xx, box AP 0.xx (N images)``."""
    names = list(report["mask"]["per_class"])
    width = max(12, *(len(n) for n in names)) + 2
    lines = [f"{'class':<{width}}{'mask AP':>9}{'box AP':>9}", "-" * (width + 18)]
    lines += [f"{n:<{width}}{_ap(report['mask']['per_class'][n]):>9}{_ap(report['box']['per_class'][n]):>9}"
              for n in names]
    lines.append("-" * (width + 18))
    m, b = report["mask"], report["box"]
    lines.append(f"AP50 mask {_ap(m['AP50'])} box {_ap(b['AP50'])}   AP75 mask {_ap(m['AP75'])} box {_ap(b['AP75'])}")
    lines.append(f"kseg: mask AP {_ap(report['mask_ap'])}, box AP {_ap(report['box_ap'])} ({report['images']} images)")
    return "\n".join(lines)


def _check_ours(path: Path) -> None:
    """Refuse to replace ``path`` unless kseg evaluate wrote it (report.json's ``software``, the PNG's text)."""
    if not path.exists():
        return
    try:
        if path.suffix == ".json":
            ours = json.loads(path.read_text()).get("software") == SOFTWARE
        else:
            from PIL import Image

            with Image.open(path) as im:
                ours = im.info.get("Software") == SOFTWARE
    except Exception:  # unreadable or not a dict: not ours
        ours = False
    if not ours:
        raise KsegError(f"{path} exists and kseg evaluate did not write it: it is left alone; choose another --out")


def check_report_paths(out) -> None:
    """Refuse an ``out`` whose report.json or worst.png kseg evaluate did not write (before any work)."""
    for name in ("report.json", "worst.png"):
        _check_ours(Path(out) / name)


def write_instance_report(out, report: dict) -> dict:
    """Write ``out/report.json`` and (when there are worst images) ``out/worst.png``; returns ``{what: path}``."""
    from kseg.errors import write_text_atomic
    from kseg.evaluation import clean

    out = Path(out)
    check_report_paths(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KsegError(f"{out}: cannot create the output folder ({err.strerror})") from None
    files = {"report": str(out / "report.json")}
    if report["_worst"]:
        files["worst"] = str(out / "worst.png")
        save_worst_grid(out / "worst.png", report["_worst"], report["_names"], report["score_threshold"])
    doc = {k: v for k, v in report.items() if not k.startswith("_")}
    doc["files"] = files
    write_text_atomic(out / "report.json", json.dumps(clean(doc), indent=1, allow_nan=False) + "\n", "report")
    return files


def save_worst_grid(path, rows, class_names, score_threshold: float) -> None:
    """One row per image: the image, its ground truth, the detections scoring >= ``score_threshold``, captioned."""
    from kseg.detection.draw import draw_instances
    from kseg.detection.predictor import Instances
    from kseg.errors import atomic_path
    from kseg.viz import _plt

    plt = _plt()
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
    for r, (image, (gc, gm, crowd), pred, score) in enumerate(rows):
        names = [class_names[c] + (" (crowd)" if k else "") for c, k in zip(gc, crowd)]
        f = max(1, -(-DISPLAY // min(image.shape[:2])))  # small images drawn larger: labels in proportion
        image, gm, boxes, masks = _enlarge(image, f, gm), _enlarge(None, f, gm), pred["boxes"] * f, _enlarge(
            None, f, pred["masks"])
        truth = Instances(_mask_boxes(gm), np.ones(len(gc)), gc, gm, names)
        shown = Instances(boxes, pred["scores"], pred["classes"], masks, [class_names[c] for c in pred["classes"]])
        panels = (image, draw_instances(image, truth, scores=False), draw_instances(image, shown))
        titles = (f"{score['file']}: F1 {score['f1']:.2f}", f"truth: {int((~crowd).sum())} objects",
                  f"prediction: {score['tp']} right, {score['fp']} wrong, {score['fn']} missed")
        for c, (panel, title) in enumerate(zip(panels, titles)):
            axes[r, c].imshow(panel)
            axes[r, c].set_axis_off()
            axes[r, c].set_title(title, fontsize=9, loc="left")
    fig.suptitle(f"the {len(rows)} worst images by F1 at mask IoU {IOU} (detections with score >= "
                 f"{score_threshold:g})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    with atomic_path(path, "worst images") as tmp:
        fig.savefig(tmp, dpi=80, format="png", metadata={"Software": SOFTWARE})
    plt.close(fig)


def _enlarge(image, f: int, masks):
    """``image`` (bilinear) or, when it is None, ``masks`` [N, H, W] (nearest) ``f`` times larger."""
    import cv2

    if image is not None:
        return image if f == 1 else cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    return np.asarray(masks, bool).repeat(f, axis=1).repeat(f, axis=2) if f > 1 else np.asarray(masks, bool)


def _mask_boxes(masks) -> np.ndarray:
    from kseg.data.instances import boxes_from_masks

    return boxes_from_masks(masks) if len(masks) else np.zeros((0, 4), np.float32)


# kseg evaluate's options that score semantic models: (option, its attribute)
SEMANTIC_ONLY = (("--data", "data"), ("--data-format", "data_format"), ("--mask", "mask"), ("--classes", "classes"),
                 ("--palette", "palette"), ("--ignore-index", "ignore_index"), ("--threshold", "threshold"),
                 ("--size", "size"), ("--val-split", "val_split"), ("--seed", "seed"), ("--fold", "fold"),
                 ("--native", "native"), ("--scales", "scales"), ("--flip", "flip"),
                 ("--output-stride", "output_stride"), ("--open", "open"), ("--close", "close"),
                 ("--min-region", "min_region"), ("--postprocess", "postprocess"), ("--pp-classes", "pp_classes"),
                 ("--cache-dir", "cache_dir"))


def _panoptic_scores(args) -> dict | None:
    """For a Panoptic FPN ``.keras``: PQ / SQ / RQ on the COCO panoptic JSON beside ``--coco`` (panoptic.json),
    with the run's categories; None for other models. A missing panoptic JSON is one line."""
    from kseg.detection.prediction import keras_class_name

    if Path(str(args.model)).suffix.lower() != ".keras" or keras_class_name(args.model) != "PanopticFPN":
        return None
    from kseg.detection.panoptic_command import load_panoptic_predictor
    from kseg.detection.panoptic_eval import evaluate_panoptic

    js = Path(args.coco).with_name("panoptic.json")
    if not js.is_file():
        raise KsegError(f"{js}: a Panoptic FPN is scored on the COCO panoptic JSON beside --coco; it is missing")
    result = evaluate_panoptic(load_panoptic_predictor(args.model, args.score_threshold), js, limit=args.limit)
    return {**result, "json": str(js)}


def evaluate_instances_command(args) -> dict | None:
    """``kseg evaluate`` for an instance model or with ``--coco``: score, write, print; None for a semantic model
    without ``--coco``."""
    from kseg.detection.prediction import is_instance_model, load_instance_predictor
    from kseg.detection.presets import is_preset

    instance = is_instance_model(args.model)
    if not instance and not getattr(args, "coco", None):  # (a Namespace made by hand may lack it)
        return None
    if not instance:
        raise KsegError(f"{args.model}: --coco scores instance models (Mask R-CNN, maskrcnn-coco); this is not one")
    if not args.coco:
        raise KsegError(f"{args.model}: an instance model is scored on COCO instance annotations: give --coco JSON")
    given = [flag for flag, attr in SEMANTIC_ONLY if getattr(args, attr, None) not in (None, False, 0)]
    if given:
        raise KsegError(f"{args.model}: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to semantic "
                        f"models; an instance model takes --coco, --images, --score-threshold, --limit, --worst")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise KsegError(f"bad --score-threshold {args.score_threshold}: give a score between 0 and 1, e.g. 0.5")
    if args.worst < 0 or (args.limit is not None and args.limit < 1):
        raise KsegError("--worst must be 0 or more and --limit 1 or more")
    model = Path(args.model)
    out = Path(args.out) if args.out else (Path(f"eval-{args.model}") if is_preset(args.model) and not model.exists()
                                           else model.parent / (f"{model.name}-eval" if model.is_dir() else "eval"))
    check_report_paths(out)
    report = evaluate_instances(load_instance_predictor(args.model), args.coco, args.images, args.model, args.worst,
                                args.limit, args.score_threshold, progress=sys.stderr.isatty())
    panoptic = _panoptic_scores(args)
    if panoptic is not None:
        report["panoptic"] = panoptic
    files = write_instance_report(out, report)
    print(format_instance_table(report))
    if panoptic is not None:
        a, t, st = panoptic["All"], panoptic["Things"], panoptic["Stuff"]
        print(f"kseg: PQ {a['pq']:.4f} (SQ {a['sq']:.4f}, RQ {a['rq']:.4f}); things PQ {t['pq'] or 0:.4f}, stuff PQ "
              f"{st['pq'] or 0:.4f} ({panoptic['images']} images, {panoptic['json']})")
    print(f"kseg: wrote {', '.join(Path(p).name for p in files.values())} in {out}", flush=True)
    return report
