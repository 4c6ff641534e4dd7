"""The figure of docs/instance.md: what instances look like, drawn from the ground truth of kseg's shapes dataset.

    .venv/bin/python bench/instances_figure.py [--images 3] [--size 256] [--seed 0] [--out docs/instances.png]

Generates a few images of the synthetic shapes dataset (``kseg shapes``, in a temporary folder), reads its
COCO instances back (:func:`kseg.data.instances.read_instances`) and draws each image's instances the way
``kseg predict`` draws a model's (:func:`kseg.detection.draw.draw_instances`: a tint and an outline per mask,
the box, the class name; no score, as this is the ground truth). Top row: the images; bottom row: the
instances. Saved as a 64-colour PNG to stay small.

With ``--model M.keras --data DIR`` (a shapes dataset folder, e.g. bench/instance.py's) it draws the first
``--images`` validation images in three rows instead: the images, their ground truth, and the model's
instances scoring at least ``--score`` (name and score on each):

    .venv/bin/python bench/instances_figure.py --model runs/bench-instance-2/maskrcnn.keras \
        --data runs/bench-instance-2/shapes --out docs/instances_predicted.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3, help="how many images (columns)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels")
    p.add_argument("--seed", type=int, default=0, help="the dataset's seed")
    p.add_argument("--crowd", type=float, default=0.5, help="the dataset's crowd probability")
    p.add_argument("--out", default="docs/instances.png", help="the PNG to write")
    p.add_argument("--model", default=None, help="a trained Mask R-CNN (.keras): draw its predictions too")
    p.add_argument("--data", default=None, help="with --model: the shapes dataset folder (its val/ split is drawn)")
    p.add_argument("--score", type=float, default=0.5, help="with --model: the lowest score drawn")
    args = p.parse_args(argv)
    if args.model:
        return predicted(args)

    from kseg.data.instances import boxes_from_masks, read_instances
    from kseg.data.shapes import generate_shapes
    from kseg.detection.draw import draw_instances
    from kseg.detection.predictor import Instances

    with tempfile.TemporaryDirectory() as tmp:
        generate_shapes(Path(tmp) / "shapes", images=args.images, val=0, size=args.size, seed=args.seed,
                        crowd=args.crowd)
        record = read_instances(Path(tmp) / "shapes" / "train" / "instances.json")
        top, bottom = [], []
        for i in range(len(record)):
            image, classes, masks, crowd = record.load(i)
            names = [record.class_names[c] + (" (crowd)" if k else "") for c, k in zip(classes, crowd)]
            found = Instances(boxes_from_masks(masks), np.ones(len(classes)), classes, masks, names)
            top.append(image)
            bottom.append(draw_instances(image, found, scores=False))
    save_grid([top, bottom], args.out)


def save_grid(rows, out) -> None:
    """Rows of equal-sized panels, 4-pixel white gaps, as a 64-colour PNG."""
    from PIL import Image

    h = rows[0][0].shape[0]
    gap = np.full((h, 4, 3), 255, np.uint8)
    lines = [np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1) for panels in rows]
    sep = np.full((4, lines[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for line in lines for x in (line, sep)][:-1], axis=0)
    Image.fromarray(grid).quantize(64, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]}, {Path(out).stat().st_size // 1024} KB)")


def predicted(args) -> None:
    """Images, ground truth and a trained model's instances of the first validation images of ``args.data``."""
    from kseg.data.instances import boxes_from_masks, read_instances
    from kseg.detection.draw import draw_instances
    from kseg.detection.predictor import InstancePredictor, Instances
    from kseg.saving import load_keras_model

    record = read_instances(Path(args.data) / "val" / "instances.json")
    size = record.images[0]["height"]
    predictor = InstancePredictor(load_keras_model(args.model), record.class_names, min_size=size, max_size=size)
    rows = [[], [], []]
    for i in range(min(args.images, len(record))):
        image, classes, masks, crowd = record.load(i)
        truth = Instances(boxes_from_masks(masks), np.ones(len(classes)), classes, masks,
                          [record.class_names[c] for c in classes])
        rows[0].append(image)
        rows[1].append(draw_instances(image, truth, scores=False))
        rows[2].append(draw_instances(image, predictor.predict(image).above(args.score)))
    save_grid(rows, args.out)


if __name__ == "__main__":
    main()
