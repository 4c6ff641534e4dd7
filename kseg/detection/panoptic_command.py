"""``kseg predict`` with a Panoptic FPN: per image ``<name>_panoptic.png`` (COCO panoptic ids), ``<name>_panoptic.json``
(its segments, with category names) and ``<name>_panoptic_overlay.png`` (stuff in class colours, things in instance
colours, a legend), as :func:`kseg.detection.panoptic_predict.write_panoptic` writes them. The categories and the
photo sizes come from the training run's ``run.json``; existing files kseg did not write are never replaced.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kseg.errors import KsegError


def load_panoptic_predictor(path, instance_score_threshold: float = 0.5):
    """The :class:`~kseg.detection.panoptic_predict.PanopticPredictor` of a Panoptic FPN ``.keras`` file at ``path``."""
    from kseg.detection.panoptic_predict import PanopticPredictor
    from kseg.runinfo import read_run_info
    from kseg.saving import load_keras_model

    info = read_run_info(path) or {}
    categories = info.get("panoptic_categories")
    if not categories:
        raise KsegError(f"{path}: no run.json with the panoptic categories beside it (kseg train --arch panoptic_fpn "
                        "writes one)")
    model = load_keras_model(path)
    return PanopticPredictor.from_categories(model, categories, min_size=info.get("min_size", 800),
                                             max_size=info.get("max_size", 1333),
                                             instance_score_threshold=instance_score_threshold)


def predict_panoptic_command(args, paths, threshold: float) -> int:
    """Write every input's panoptic outputs into ``args.out``; say what was written in one line."""
    from kseg.detection.panoptic_predict import panoptic_paths, write_panoptic
    from kseg.prediction import _read_or_skip, check_outputs, output_names

    predictor = load_panoptic_predictor(args.model, threshold)
    paths = [Path(p) for p in paths]
    names = output_names(paths)
    check_outputs(paths, [f for name in names for f in panoptic_paths(args.out, name).values()])
    t0, skipped, done = time.time(), [], 0
    for path, name in zip(paths, names):
        image = _read_or_skip(path, skipped, False)
        if image is None:
            continue
        write_panoptic(args.out, name, image, predictor.predict(image), predictor.categories, alpha=args.alpha)
        done += 1
    if not done:
        raise KsegError(f"{paths[0]}: none of the {len(paths)} input images could be read")
    note = f"; skipped {len(skipped)} unreadable image(s)" if skipped else ""
    print(f"kseg: wrote the panoptic segmentation of {done} image(s) to {args.out} (_panoptic.png, _panoptic.json, "
          f"_panoptic_overlay.png) in {time.time() - t0:.1f}s{note}", file=sys.stdout)
    return 0
