"""Mask R-CNN's photo inference time on this CPU: the COCO-sized model (ResNet-50 FPN, 91 classes) with seeded
random weights in torchvision's layout, one 800x1216 photo, ``InstancePredictor`` (resize, model, masks pasted).

    PYTHONPATH=$PWD .venv/bin/python bench/maskrcnn_speed.py [--height 800] [--width 1216] [--runs 3]

Prints JSON: the build-and-load time, the first call (tracing included) and each later call, in seconds.
Random weights give the full 100 detections, so the heads and the mask pasting do their most work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=800, help="photo height")
    p.add_argument("--width", type=int, default=1216, help="photo width")
    p.add_argument("--runs", type=int, default=3, help="timed calls after the first")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "fixtures" / "torchvision"))
    import maskrcnn_state as state

    from kseg.detection import torchvision_weights as tw
    from kseg.detection.maskrcnn import MaskRCNN
    from kseg.detection.predictor import InstancePredictor

    t = time.perf_counter()
    model = MaskRCNN(91)
    model.build((None, None, None, 3))
    tw.load_state_dict(model, state.random_state(state.load_shapes()))
    built = time.perf_counter() - t
    photo = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    predictor = InstancePredictor(model)
    t = time.perf_counter()
    found = predictor.predict(photo)
    first = time.perf_counter() - t
    runs = []
    for _ in range(args.runs):
        t = time.perf_counter()
        predictor.predict(photo)
        runs.append(round(time.perf_counter() - t, 2))
    print(json.dumps({"photo": [args.height, args.width], "detections": len(found.scores), "build_load_s": round(built, 1),
                      "first_s": round(first, 1), "runs_s": runs, "median_s": sorted(runs)[len(runs) // 2]}))


if __name__ == "__main__":
    main()
