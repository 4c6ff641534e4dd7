"""What a training run writes besides its checkpoints: run.json, metrics.json (the best model's validation
scores), predictions.png, and the closing line."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kseg.errors import write_text_atomic


def run_info(config, data, finished: bool = False) -> dict:
    """``run.json``'s settings (see :mod:`kseg.runinfo`): what evaluate and predict take from a run."""
    import numpy as np

    ds = data.ds
    colors = getattr(ds, "colors", None)
    return {"data": str(Path(config.data).resolve()) if config.data else str(ds.root),
            "data_format": config.data_format, "mask": ds.mask, "class_names": list(ds.class_names),
            "colors": None if colors is None else np.asarray(colors).tolist(),
            "binary": data.binary, "threshold": config.threshold if data.binary else None,
            "ignore_index": config.ignore_index if config.data_format == "folder" else None,
            "size": list(config.size), "val_split": config.val_split, "seed": config.seed, "fold": config.fold,
            "limit": config.limit, "train_ids": [ds.ids[i] for i in data.train_idx],
            "val_ids": [ds.ids[i] for i in data.val_idx], "model": config.model, "backbone": config.backbone,
            "recipe": config.recipe, "finished": finished}


def run_summary(config, data, seconds: float) -> dict:
    """What metrics.json says about the run beside the scores, with every resolved option (``options``)."""
    return {"mask": data.ds.mask, "model": config.model, "backbone": config.backbone, "epochs": config.epochs,
            "size": list(config.size), "train_images": len(data.train_idx), "val_images": len(data.val_idx),
            "skipped_images": data.skipped, "fold": config.fold, "recipe": config.recipe,
            "seconds": round(seconds, 1), "options": config.as_dict()}


def evaluate_native(model, config, data) -> dict:
    """``model``'s scores on the validation images at their native resolution with ``--eval-scales``,
    ``--eval-flip`` and ``--eval-output-stride`` (metrics.json's ``native``); says them in one line."""
    # the scoring lives in the evaluate command's module; it belongs in a library module beside it
    from kseg.evaluation import evaluate_native as score_native
    from kseg.models import with_output_stride

    scales = config.eval_scales or (1.0,)
    t0 = time.time()
    dense = with_output_stride(model, config.eval_output_stride) if config.eval_output_stride else model
    tta = scales
    if config.multiscale and config.eval_scales:  # a multi-scale model merges them by its own attention
        from kseg.models.multiscale import at_scales

        dense, tta = at_scales(model, scales), (1.0,)
    native = score_native(dense, [data.ds.image_paths[i] for i in data.val_idx],
                          [data.ds.labels[i] for i in data.val_idx], data.ds.class_names, scales=tta,
                          flip=config.eval_flip, size=config.size, threshold=config.threshold)
    native.update(scales=list(scales), flip=bool(config.eval_flip), output_stride=config.eval_output_stride,
                  seconds=round(time.time() - t0, 1))
    stride = f", output stride {config.eval_output_stride}" if config.eval_output_stride else ""
    print(f"kseg: at native resolution with scales {','.join(f'{v:g}' for v in scales)}"
          f"{' and flips' if config.eval_flip else ''}{stride}: pixel accuracy {native['pixel_accuracy']:.4f}, "
          f"mean class accuracy {native['mean_accuracy']:.4f}, mIoU {native['miou']:.4f}", flush=True)
    return native


def evaluate_to_json(model, val_ds, class_names, path, extra=None, threshold=None) -> dict:
    """Confusion matrix of ``model`` over ``val_ds`` (:func:`kseg.evaluation.evaluate`) → scores → ``path`` (JSON).

    ``threshold``: a binary model's (one sigmoid output) foreground threshold; its targets are one channel of
    0 / 1 with any other value unknown, and its confusion matrix is 2 x 2 (background, foreground)."""
    import numpy as np

    from kseg.evaluation import evaluate
    from kseg.metrics import scores

    c = len(class_names)

    def batches():  # binary targets (0 / 1, anything else unknown) go as they are: evaluate() reads them
        for x, y in val_ds:
            y = y.numpy()
            if y.ndim == 4 and y.shape[-1] == c:  # one-hot: an all-zero row is unknown
                y = np.where(y.max(-1) > 0, y.argmax(-1), -1)
            yield x.numpy(), y

    cm = evaluate(lambda x: np.asarray(model.predict_on_batch(x)), batches(), c, worst=0,
                  threshold=0.5 if threshold is None else threshold)["cm"]
    report = scores(cm, class_names)
    report["confusion_matrix"] = cm.tolist()
    report.update(extra or {})
    write_text_atomic(path, json.dumps(report, indent=2), "metrics")
    return report


def save_predictions(model, ds, val_idx, size, path, n: int = 4, threshold=None) -> None:
    """The tutorial's picture: a few validation images, their truth and the model's prediction."""
    import numpy as np
    import tensorflow as tf

    from kseg.data.pipeline import decode_image
    from kseg.metrics import binary_labels
    from kseg.viz import save_prediction_grid

    idx = list(val_idx[:n])
    if not idx:
        return
    images, truths = [], []
    for i in idx:
        img = tf.image.resize(tf.cast(decode_image(ds.image_paths[i]), tf.float32), size).numpy()
        lab = tf.image.resize(ds.labels[i][..., None], size, method="nearest").numpy()[..., 0]
        images.append(img)
        truths.append(lab)
    out = model.predict(np.stack(images), verbose=0)
    preds = binary_labels(out, threshold) if threshold is not None else np.argmax(out, -1)
    colors = getattr(ds, "colors", None)  # a folder dataset's palette file, if it had one
    if colors is None:
        colors = "binary" if threshold is not None else ds.mask
    save_prediction_grid(path, images, truths, preds, ds.class_names, colors)


def names(paths, n: int = 3) -> str:
    """The first ``n`` file names of ``paths``, and how many more."""
    shown = [Path(p).name for p in paths]
    return ", ".join(shown[:n]) + (f" and {len(shown) - n} more" if len(shown) > n else "")


def closing_line(config, data, report: dict, out: Path) -> str:
    """The run's last line: the best model's validation scores, where the outputs are, what was skipped."""
    skipped = data.skipped
    note = f"; skipped {len(skipped)} unreadable image(s): {names(skipped)}" if skipped else ""
    fg = (f", foreground IoU {report['iou'][data.ds.class_names[1]] or 0.0:.4f} (threshold {config.threshold:g})"
          if data.binary else "")
    return (f"kseg: validation pixel accuracy {report['pixel_accuracy']:.4f}, mIoU {report['miou']:.4f}{fg} "
            f"(best.keras); outputs in {out}{note}")
