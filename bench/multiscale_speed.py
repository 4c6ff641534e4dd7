"""Seconds per image of a multi-scale model's own merge against average test-time augmentation, as JSON.

    .venv/bin/python bench/multiscale_speed.py --single runs/a/best.keras --multiscale runs/b/best.keras \\
        --images data/iccv09Data/images [--n 20] [--sets 1 0.5,1 0.5,1,2]

Each figure is the median over ``--n`` photos of one :class:`kseg.inference.Predictor` call (the photo at its
own size in, probabilities at that size out; the model's base size as ``kseg predict`` picks it), after two
warm-up calls: ``--single`` with average test-time augmentation over each scale set, ``--multiscale`` merging
each set (two or more scales) by its own attention, or its trunk alone at one scale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def timed(predictor, images) -> float:
    for image in images[:2]:
        predictor(image)
    times = []
    for image in images:
        t0 = time.perf_counter()
        predictor(image)
        times.append(time.perf_counter() - t0)
    return round(sorted(times)[len(times) // 2], 4)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--single", required=True, help="an ordinary .keras model")
    p.add_argument("--multiscale", required=True, help="a multi-scale .keras model (kseg train --multiscale)")
    p.add_argument("--images", required=True, help="a folder of photos")
    p.add_argument("--n", type=int, default=20, help="photos timed (default 20)")
    p.add_argument("--sets", nargs="+", default=["1", "0.5,1", "0.5,1,2"], help="scale sets (default 1 0.5,1 0.5,1,2)")
    args = p.parse_args(argv)

    from kseg.inference import Predictor, parse_scales, read_image
    from kseg.saving import load_keras_model

    images = [read_image(f) for f in sorted(Path(args.images).glob("*.jpg"))[:args.n]]
    single, multi = load_keras_model(args.single), load_keras_model(args.multiscale)
    rows = []
    for spec in args.sets:
        scales = parse_scales(spec)
        rows.append({"scales": spec, "average_tta_s": timed(Predictor(single, scales=scales), images),
                     "multiscale_attention_s": timed(Predictor(multi, model_scales=scales), images)})
    print(json.dumps({"images": len(images), "image_size": list(images[0].shape[:2]), "seconds_per_image": rows},
                     indent=1))


if __name__ == "__main__":
    main()
