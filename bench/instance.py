"""Mask R-CNN and Panoptic FPN on kseg's synthetic shapes: from an ImageNet backbone to mask AP / PQ within a
time budget. JSON out.

    python bench/instance.py --minutes 60 --out runs/bench-instance
    python bench/instance.py --model panoptic_fpn --target 0.6 --minutes 60 --out runs/bench-panoptic

Generates the shapes dataset (``kseg shapes``: 5 thing classes on 3 textured stuff classes, overlapping
instances), trains ``MaskRCNN`` or ``PanopticFPN`` (MobileNetV2 ImageNet backbone by default; batch norm
frozen) with ``fit`` until the budget is spent, scoring the validation split every ``--eval-every``
minutes (that time counts in the budget): COCO box and mask AP (pycocotools) for Mask R-CNN; PQ, SQ, RQ
(panopticapi's definition) and the instance APs for Panoptic FPN. Prints one JSON line: the settings,
the machine, the scores after each evaluation with the seconds spent so far, and whether the score
(mask AP, or PQ) reached ``--target`` and when. The ImageNet weights come from ``$KERAS_HOME/models``; offline, the script links
``../shared/weights`` there as bench/accuracy.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import _keras_home, _machine  # noqa: E402



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("maskrcnn", "panoptic_fpn"), default="maskrcnn", help="what to train")
    p.add_argument("--stuff-area", type=int, default=256,
                   help="Panoptic FPN: smallest stuff region kept by the merge, pixels")
    p.add_argument("--minutes", type=float, default=60.0, help="the whole budget: training and evaluations")
    p.add_argument("--eval-every", type=float, default=10.0, help="minutes between validation scores")
    p.add_argument("--target", type=float, default=0.7, help="the mask AP to reach")
    p.add_argument("--train", type=int, default=400, help="training images generated")
    p.add_argument("--val", type=int, default=100, help="validation images generated")
    p.add_argument("--size", type=int, default=256, help="image size (square)")
    p.add_argument("--batch", type=int, default=4, help="images per step")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    p.add_argument("--backbone", default="mobilenetv2", help="kseg backbone under the FPN")
    p.add_argument("--weights", default="imagenet", help="backbone weights ('imagenet' or none)")
    p.add_argument("--max-instances", type=int, default=12, help="instances kept per image")
    p.add_argument("--out", default="runs/bench-instance", help="folder for the data, the model and the JSON")
    p.add_argument("--seed", type=int, default=0, help="data and sampling seed")
    return p.parse_args(argv)


def evaluate_panoptic_split(model, val_dir: Path, size: int, stuff_area: int) -> dict:
    """PQ / SQ / RQ (All, Things, Stuff) of a Panoptic FPN on the split at ``val_dir``, and its instance APs."""
    from kseg.detection.panoptic_eval import evaluate_panoptic, read_panoptic_json
    from kseg.detection.panoptic_predict import PanopticPredictor

    js = val_dir / "panoptic.json"
    predictor = PanopticPredictor.from_categories(model, read_panoptic_json(js)["categories"], min_size=size,
                                                  max_size=size, stuff_area_threshold=stuff_area)
    res = evaluate_panoptic(predictor, js)
    row = {f"{group}_{k}": round(float(res[group][k]), 4) for group in ("All", "Things", "Stuff")
           for k in ("pq", "sq", "rq") if res[group][k] is not None}
    row["pq"] = row.get("All_pq")
    return row | {"instances": evaluate(model, val_dir, size)}


def evaluate(model, val_dir: Path, size: int) -> dict:
    """COCO box and mask AP of ``model`` on the split at ``val_dir`` (what ``kseg evaluate --coco`` computes)."""
    from kseg.data.instances import read_instances
    from kseg.detection.evaluation import evaluate_instances
    from kseg.detection.predictor import InstancePredictor

    names = read_instances(val_dir / "instances.json").class_names
    predictor = InstancePredictor(model, names, min_size=size, max_size=size)
    report = evaluate_instances(predictor, val_dir / "instances.json", worst=0, score_threshold=0.0)
    detections = [r["tp"] + r["fp"] for r in report["per_image"]]
    return {"segm": report["mask_ap"], "bbox": report["box_ap"], "segm_AP50": report["mask"]["AP50"],
            "segm_per_class": report["mask"]["per_class"], "images": report["images"],
            "mean_detections": round(sum(detections) / max(len(detections), 1), 1)}


class Budget:
    """Stops training when the budget is spent; evaluates every ``every`` seconds (that time counts too)."""

    def __init__(self, model, val_dir, size, seconds, every, target, log, scorer=None, key="segm"):
        import keras

        self.start, self.seconds, self.every, self.target, self.log = time.time(), seconds, every, target, log
        self.next_eval, self.rows, self.reached = every, [], None
        self.scorer, self.key = scorer or evaluate, key
        outer = self

        class Stop(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                spent = time.time() - outer.start
                if spent >= outer.next_eval or spent >= outer.seconds:
                    outer.score(model, val_dir, size, logs)
                    outer.next_eval = (time.time() - outer.start) + outer.every
                if time.time() - outer.start >= outer.seconds or outer.reached is not None:
                    self.model.stop_training = True

        self.callback = Stop()

    def score(self, model, val_dir, size, logs):
        row = {"seconds": round(time.time() - self.start, 1), "loss": {k: round(float(v), 4) for k, v in
                                                                         (logs or {}).items()}}
        row.update(self.scorer(model, val_dir, size))
        row["seconds_after_eval"] = round(time.time() - self.start, 1)
        self.rows.append(row)
        print(json.dumps({"eval": row}), file=self.log, flush=True)
        if row.get(self.key) is not None and row[self.key] >= self.target and self.reached is None:
            self.reached = row["seconds"]


def main(argv=None):
    args = parse_args(argv)
    os.environ.update(_keras_home(dict(os.environ)))
    import keras

    from kseg.data.instances import instance_dataset, read_instances
    from kseg.data.shapes import generate_shapes
    from kseg.detection.fit import LIGHT as MODEL  # the model ``kseg train --arch maskrcnn --light`` trains
    from kseg.detection.maskrcnn import MaskRCNN
    from kseg.detection.training import instance_inputs

    out = Path(args.out)
    data = out / "shapes"
    if not (data / "train" / "instances.json").exists():
        generate_shapes(data, images=args.train, val=args.val, size=args.size, seed=args.seed)
    record = read_instances(data / "train" / "instances.json")
    common = dict(size=(args.size, args.size), max_instances=args.max_instances, batch_size=args.batch, augment=True,
                  seed=args.seed, shuffle=True, drop_remainder=True)
    weights = None if args.weights == "none" else args.weights
    settings = dict(backbone=args.backbone, backbone_weights=weights, seed=args.seed, **MODEL)
    if args.model == "panoptic_fpn":
        from kseg.data.panoptic_data import panoptic_dataset
        from kseg.detection.panoptic_fpn import PanopticFPN

        stuff = sorted(c["id"] for c in json.loads((data / "train" / "panoptic.json").read_text())["categories"]
                       if not c["isthing"])
        ds = panoptic_dataset(record, data / "train" / "semantic", stuff, **common)
        model = PanopticFPN(num_things=len(record.class_names) - 1, num_stuff=len(stuff), **settings)
        scorer, key = (lambda m, d, s: evaluate_panoptic_split(m, d, s, args.stuff_area)), "pq"
    else:
        ds = instance_dataset(record, **common)
        model = MaskRCNN(num_classes=len(record.class_names), **settings)
        scorer, key = evaluate, "segm"
    ds = ds.map(instance_inputs).repeat()
    model.build((None, args.size, args.size, 3))
    model.compile(optimizer=keras.optimizers.Adam(args.lr), jit_compile=False)
    budget = Budget(model, data / "val", args.size, args.minutes * 60, args.eval_every * 60, args.target, sys.stderr,
                    scorer, key)
    steps = max(1, len(record) // args.batch)
    with contextlib.redirect_stdout(sys.stderr):  # Keras's epoch lines: stdout keeps the JSON alone
        model.fit(ds, epochs=10_000, steps_per_epoch=steps, callbacks=[budget.callback], verbose=2, shuffle=False)
    if budget.reached is None and (not budget.rows or budget.rows[-1]["seconds_after_eval"] < time.time() - budget.start
                                   - 5):
        budget.score(model, data / "val", args.size, None)
    model.save(out / f"{args.model}.keras")
    final = budget.rows[-1]
    print(json.dumps({"bench": "instance", "model": args.model, "backbone": args.backbone, "weights": args.weights,
                      "settings": {**vars(args), **MODEL},
                      "machine": _machine(), "evals": budget.rows, "score": key,
                      "final": final.get(key), "target": args.target, "target_reached_seconds": budget.reached,
                      "met": budget.reached is not None}))


if __name__ == "__main__":
    main()
