"""The figure of docs/instance.md: what instances look like, drawn from the ground truth of kseg's shapes dataset.

    .venv/bin/python bench/instances_figure.py [--images 3] [--size 256] [--seed 0] [--out docs/instances.png]

Generates a few images of the synthetic shapes dataset (``kseg shapes``, in a temporary folder), reads its
COCO instances back (:func:`kseg.data.instances.read_instances`) and draws each image's instances the way
``kseg predict`` draws a model's (:func:`kseg.detection.draw.draw_instances`: a tint and an outline per mask,
the box, the class name; no score, as this is the ground truth). Top row: the images; bottom row: the
instances. Saved as a 64-colour PNG to stay small.
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
    args = p.parse_args(argv)

    from PIL import Image

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
    gap = np.full((args.size, 4, 3), 255, np.uint8)

    def row(panels):
        return np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)

    grid = np.concatenate([row(top), np.full((4, row(top).shape[1], 3), 255, np.uint8), row(bottom)], axis=0)
    Image.fromarray(grid).quantize(64, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]}, {Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
