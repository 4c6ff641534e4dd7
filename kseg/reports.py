"""An evaluation's report: the scores as JSON, the confusion-matrix and worst-image pictures, the table.

The library under ``kseg.evaluate``: :func:`build_report` turns :func:`kseg.evaluation.evaluate`'s
confusion matrix into scores (:func:`kseg.metrics.scores`) with the settings that produced them,
:func:`add_postprocess` adds the post-processed scores and their change, :func:`write_outputs`
writes ``report.json``, ``confusion_matrix.png`` (and ``confusion_matrix_postprocessed.png``) and
``worst.png`` into the output folder, and :func:`format_table` is the per-class table for the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kseg.evaluation import _nan, change, clean


# a binary dataset's background and foreground, when none are given (kseg.viz.PALETTES["binary"])
BINARY_COLORS = ((90, 90, 90), (230, 30, 30))


# the order of report.json's settings after the scores
REPORT_ORDER = ("model", "model_format", "data", "data_format", "mask", "split", "split_from", "val_split", "seed",
                "limit", "size", "images", "fold", "native", "scales", "flip", "output_stride", "per_image", "worst",
                "run_info", "from_run_info", "training_images_scored", "binary", "threshold")


def picture_colors(palette, colors, dataset_colors, class_names, binary: bool, mask, model_path):
    """The colours for pictures: ``palette`` (a name or file), ``colors`` (run.json's), the dataset's,
    else a binary model's :data:`BINARY_COLORS` or kseg's for ``mask`` (None: kseg's default)."""
    if palette:
        from kseg.prediction import resolve_palette

        return resolve_palette(palette, len(class_names), model_path)
    for cand in (colors, dataset_colors):
        if cand is not None and len(np.asarray(cand).reshape(-1, 3)) == len(class_names):
            return np.asarray(cand, np.uint8).reshape(-1, 3)
    if binary:
        return np.array(BINARY_COLORS, np.uint8)
    return mask


def build_report(res: dict, class_names, settings: dict, binary: bool, threshold: float) -> dict:
    """The scores of ``res`` (:func:`kseg.evaluation.evaluate`'s result), the confusion matrix (also
    row-normalised), per-image scores, the worst images' ids and ``settings``; a binary model's
    foreground IoU and Dice."""
    from kseg.metrics import scores

    report = scores(res["cm"], class_names)
    cm = res["cm"]
    rows = cm.sum(1, keepdims=True)
    fields = {**settings, "images": res["images"], "per_image": res["per_image"],
              "worst": [w[1] for w in res["worst"]], "binary": bool(binary), "threshold": threshold if binary else None}
    report.update({
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0).tolist(),
        **{k: fields.pop(k) for k in REPORT_ORDER if k in fields}, **fields,
    })
    if binary:
        fg = class_names[1]
        report.update({"foreground": fg, "foreground_iou": report["iou"][fg], "foreground_dice": report["dice"][fg]})
    return report


def add_postprocess(report: dict, res: dict, options: dict | None, class_names) -> dict | None:
    """Set ``report["postprocess"]``: the options (class names for ids), scores, confusion matrix and
    change post-processing brings (None without ``options``). Returns the post-processed scores."""
    if not options:
        report["postprocess"] = None
        return None
    from kseg.metrics import scores

    post = scores(res["cm_postprocessed"], class_names)
    opts = dict(options)
    opts["classes"] = None if opts["classes"] is None else [class_names[c] for c in opts["classes"]]
    if isinstance(opts["min_size"], dict):
        opts["min_size"] = {class_names[c]: v for c, v in opts["min_size"].items()}
    report["postprocess"] = {"options": opts, "scores": post,
                             "confusion_matrix": res["cm_postprocessed"].tolist(),
                             "change": change(report, post)}
    return post


def write_pictures(out: Path, report: dict, res: dict, class_names, label: str, colors) -> dict:
    """Draw the confusion matrices and the worst images into ``out``; returns ``{what: path}``."""
    from kseg.viz import plot_confusion_matrix, save_captioned_grid

    files = {"report": str(out / "report.json"), "confusion_matrix": str(out / "confusion_matrix.png")}
    plot_confusion_matrix(out / "confusion_matrix.png", res["cm"], class_names,
                          title=f"{label}: confusion matrix ({res['images']} images, rows sum to 1)")
    if report.get("postprocess"):
        files["confusion_matrix_postprocessed"] = str(out / "confusion_matrix_postprocessed.png")
        plot_confusion_matrix(files["confusion_matrix_postprocessed"], res["cm_postprocessed"], class_names,
                              title=f"{label}: after post-processing (rows sum to 1)")
    worst = res["worst"]
    if worst:
        what = "foreground IoU" if report.get("binary") else "mIoU"
        files["worst"] = str(out / "worst.png")
        save_captioned_grid(out / "worst.png", [w[2] for w in worst], [w[3] for w in worst],
                            [w[4] for w in worst], class_names,
                            [f"{w[1]}: {what} {w[0]:.3f}" for w in worst], colors,
                            title=f"the {len(worst)} worst images by {what}")
    return files


def write_report(out: Path, report: dict) -> None:
    """Write ``report`` as ``out/report.json`` (JSON-safe: NaN as null), atomically."""
    from kseg.errors import write_text_atomic

    write_text_atomic(out / "report.json", json.dumps(clean(report), indent=2, allow_nan=False), "report")


def format_table(report: dict, post: dict | None = None) -> str:
    """The per-class table and the summary lines printed on the terminal."""
    names = report["class_names"]
    width = max(12, *(len(n) for n in names)) + 2

    def f(v):
        return "   -  " if v is None or _nan(v) else f"{v:6.4f}"

    head = f"{'class':<{width}}{'IoU':>8}{'Dice':>8}{'Prec.':>8}{'Recall':>8}{'pixels':>12}"
    if post:
        head += f"{'IoU pp':>9}{'change':>9}"
    lines = [head, "-" * len(head)]
    for n in names:
        line = (f"{n:<{width}}{f(report['iou'][n]):>8}{f(report['dice'][n]):>8}"
                f"{f(report['precision'][n]):>8}{f(report['recall'][n]):>8}{report['support'][n]:>12,}")
        if post:
            d = None if report["iou"][n] is None or post["iou"][n] is None else post["iou"][n] - report["iou"][n]
            line += f"{f(post['iou'][n]):>9}{'   -' if d is None else f'{d:+.4f}':>9}"
        if n in report["absent"]:
            line += "  (absent)"
        lines.append(line)
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{width}}{f(report['miou']):>8}{f(report['mean_dice']):>8}"
                 f"{f(report['mean_precision']):>8}{f(report['mean_recall']):>8}{report['pixels']:>12,}"
                 + (f"{f(post['miou']):>9}{post['miou'] - report['miou']:>+9.4f}" if post else ""))
    lines.append(f"pixel accuracy {f(report['pixel_accuracy'])}   mean class accuracy "
                 f"{f(report['mean_accuracy'])}   frequency-weighted IoU {f(report['fw_iou'])}")
    if post:
        lines.append(f"post-processed: pixel accuracy {f(post['pixel_accuracy'])} "
                     f"({post['pixel_accuracy'] - report['pixel_accuracy']:+.4f}), mIoU {f(post['miou'])} "
                     f"({post['miou'] - report['miou']:+.4f})")
    if report.get("binary"):
        fg = "foreground" + ("" if report["foreground"] == "foreground" else f" ({report['foreground']})")
        lines.append(f"{fg}: IoU {f(report['foreground_iou'])}   Dice "
                     f"{f(report['foreground_dice'])}   (p >= {report['threshold']:g})")
    if report["absent"]:
        lines.append(f"absent from truth and prediction (left out of the means): {', '.join(report['absent'])}")
    return "\n".join(lines)
