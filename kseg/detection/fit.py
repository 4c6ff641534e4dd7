"""Train Mask R-CNN or Panoptic FPN on a COCO dataset: :func:`fit_instances` (``kseg train --arch maskrcnn``).

The training images come from a COCO instances JSON (``--coco``; images in ``images/`` beside it, or
``--images``); Panoptic FPN also reads the COCO panoptic JSON beside it (``panoptic.json``) for its stuff
classes and the semantic maps in ``semantic/`` (what ``kseg shapes`` writes). Images are letterboxed to
``size``, augmented (flip, scale jitter, crop) with boxes and masks moved together, and batched with at most
``max_instances`` instances each (:mod:`kseg.data.instances`).

Every epoch the run folder gets ``last.keras`` (the model, resumable) and a row in ``history.csv``; with a
validation split (``--val-coco``) the model is scored every ``eval_every`` epochs (COCO mask AP; PQ for
Panoptic FPN) and the best so far is saved as ``best.keras`` (the model alone, for inference), with
``metrics.json`` holding every score. ``run.json`` names the classes, their COCO ids, the architecture and
the size, so ``kseg predict`` and ``kseg evaluate`` need only ``--model``. An existing run folder is
continued with ``resume=True`` (from its ``last.keras`` and ``history.csv``) and otherwise refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kseg.errors import KsegError, write_text_atomic

ARCHS = ("maskrcnn", "panoptic_fpn")
# ``--light``: a smaller FPN and heads and fewer proposals and RoIs, for small datasets, few objects per image
# and CPUs (bench/instance.py trains with it); the default is torchvision's maskrcnn_resnet50_fpn
LIGHT = dict(fpn_channels=128, representation=256, train_pre_nms_top_n=1000, train_post_nms_top_n=500,
             pre_nms_top_n=500, post_nms_top_n=300, roi_batch=128, max_mask_rois=16, detections=50,
             anchor_sizes=((16,), (32,), (64,), (128,), (256,)))


@dataclass
class InstanceTrainConfig:
    coco: str
    arch: str = "maskrcnn"
    images: str | None = None
    val_coco: str | None = None
    backbone: str = "mobilenetv2"
    weights: str | None = "imagenet"
    size: int = 512
    batch: int = 2
    epochs: int = 12
    lr: float = 1e-4
    max_instances: int = 50
    eval_every: int = 1
    out: str = "runs/maskrcnn"
    seed: int = 0
    resume: bool = False
    model_settings: dict = field(default_factory=dict)


def _data(cfg: InstanceTrainConfig):
    from kseg.data.instances import instance_dataset, read_instances

    record = read_instances(cfg.coco, cfg.images)
    common = dict(size=(cfg.size, cfg.size), max_instances=cfg.max_instances, batch_size=cfg.batch, augment=True,
                  seed=cfg.seed, shuffle=True, drop_remainder=True)
    if cfg.arch != "panoptic_fpn":
        return record, None, instance_dataset(record, **common)
    from kseg.data.panoptic_data import panoptic_dataset

    panoptic = Path(cfg.coco).with_name("panoptic.json")
    if not panoptic.is_file():
        raise KsegError(f"{panoptic}: Panoptic FPN needs the COCO panoptic JSON beside {cfg.coco}")
    categories = json.loads(panoptic.read_text())["categories"]
    stuff = sorted(c["id"] for c in categories if not c.get("isthing"))
    return record, categories, panoptic_dataset(record, Path(cfg.coco).with_name("semantic"), stuff, **common)


def build_model(cfg: InstanceTrainConfig, record, categories):
    """The model of ``cfg`` for the classes of ``record`` (and, for Panoptic FPN, the stuff of ``categories``)."""
    weights = None if cfg.weights in (None, "none") else cfg.weights
    common = dict(backbone=cfg.backbone, backbone_weights=weights, seed=cfg.seed, **cfg.model_settings)
    if cfg.arch == "panoptic_fpn":
        from kseg.detection.panoptic_fpn import PanopticFPN

        stuff = [c for c in categories if not c.get("isthing")]
        model = PanopticFPN(num_things=len(record.class_names) - 1, num_stuff=len(stuff), **common)
    else:
        from kseg.detection.maskrcnn import MaskRCNN

        model = MaskRCNN(num_classes=len(record.class_names), **common)
    model.build((None, cfg.size, cfg.size, 3))
    return model


def inference_copy(model):
    """The model without its optimizer: a new instance of its class with its weights (what best.keras holds)."""
    copy = type(model).from_config(model.get_config())
    copy.build((None, None, None, 3))
    copy.set_weights(model.get_weights())
    return copy


def score(model, cfg: InstanceTrainConfig, class_names) -> dict:
    """The validation scores: COCO box and mask AP; for Panoptic FPN also PQ / SQ / RQ (All, Things, Stuff)."""
    from kseg.detection.evaluation import evaluate_instances
    from kseg.detection.predictor import InstancePredictor

    predictor = InstancePredictor(model, class_names, min_size=cfg.size, max_size=cfg.size)
    report = evaluate_instances(predictor, cfg.val_coco, worst=0)
    result = {"mask_ap": report["mask_ap"], "box_ap": report["box_ap"], "mask_ap_per_class": report["mask"].get(
        "per_class")}
    if cfg.arch == "panoptic_fpn":
        from kseg.detection.panoptic_eval import evaluate_panoptic, read_panoptic_json
        from kseg.detection.panoptic_predict import PanopticPredictor

        panoptic = Path(cfg.val_coco).with_name("panoptic.json")
        pp = PanopticPredictor.from_categories(model, read_panoptic_json(panoptic)["categories"], min_size=cfg.size,
                                               max_size=cfg.size)
        result["panoptic"] = {k: v for k, v in evaluate_panoptic(pp, panoptic).items() if k != "per_class"}
    return result


def key_score(result: dict, arch: str) -> float:
    """What picks best.keras: PQ for Panoptic FPN, mask AP otherwise."""
    if arch == "panoptic_fpn":
        return float(result["panoptic"]["All"]["pq"] or 0.0)
    return float(result["mask_ap"] or 0.0)


def _start(cfg: InstanceTrainConfig, out: Path):
    """``(model or None to build, first epoch, scores so far)``: a new run, or the resumed one."""
    import keras

    last = out / "last.keras"
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        raise KsegError(f"{out}: the run folder exists and is not empty; give --resume to continue it or another "
                        "--out")
    if not cfg.resume or not last.is_file():
        return None, 0, []
    state = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    return keras.saving.load_model(last), int(state.get("epochs_done", 0)), state.get("evals", [])


def fit_instances(cfg: InstanceTrainConfig) -> dict:
    """Train as ``cfg`` says (see the module's docstring); returns ``metrics.json``'s content."""
    import keras

    from kseg.detection.training import instance_inputs
    from kseg.runinfo import write_run_info

    if cfg.arch not in ARCHS:
        raise KsegError(f"unknown --arch {cfg.arch!r} for instance training: choose {' or '.join(ARCHS)}")
    out = Path(cfg.out)
    model, first, evals = _start(cfg, out)
    record, categories, ds = _data(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(out, {"task": "panoptic" if cfg.arch == "panoptic_fpn" else "instance", "model": cfg.arch,
                         "backbone": cfg.backbone, "class_names": record.class_names,
                         "category_ids": record.category_ids, "panoptic_categories": categories,
                         "size": [cfg.size, cfg.size], "min_size": cfg.size, "max_size": cfg.size, "data": cfg.coco,
                         "config": asdict(cfg)})
    if model is None:
        model = build_model(cfg, record, categories)
        model.compile(optimizer=keras.optimizers.Adam(cfg.lr), jit_compile=False)
    steps = max(1, len(record) // cfg.batch)
    saver = EpochSaver(cfg, out, evals, record.class_names)
    model.fit(ds.map(instance_inputs).repeat(), epochs=cfg.epochs, initial_epoch=first, steps_per_epoch=steps,
              callbacks=[saver, keras.callbacks.CSVLogger(str(out / "history.csv"), append=first > 0)],
              verbose=2, shuffle=False)
    return saver.metrics


class EpochSaver:
    """After every epoch: last.keras and metrics.json; every ``eval_every`` epochs the validation scores and,
    when they are the best so far, best.keras."""

    def __new__(cls, *args, **kwargs):
        import keras

        class _Saver(keras.callbacks.Callback):
            def __init__(self, cfg, out, evals, class_names):
                super().__init__()
                self.cfg, self.out, self.evals, self.class_names = cfg, out, list(evals), class_names
                self.best = max((e["score"] for e in self.evals), default=float("-inf"))
                self.metrics = {}

            def on_epoch_end(self, epoch, logs=None):
                self.model.save(self.out / "last.keras")
                if self.cfg.val_coco and ((epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs):
                    result = score(self.model, self.cfg, self.class_names)
                    value = key_score(result, self.cfg.arch)
                    self.evals.append({"epoch": epoch + 1, "score": value, **result})
                    if value > self.best:
                        self.best = value
                        inference_copy(self.model).save(self.out / "best.keras")
                elif not self.cfg.val_coco:
                    inference_copy(self.model).save(self.out / "best.keras")
                self.metrics = {"epochs_done": epoch + 1, "best": self.best if self.evals else None,
                                "evals": self.evals, "loss": {k: float(v) for k, v in (logs or {}).items()}}
                write_text_atomic(self.out / "metrics.json", json.dumps(self.metrics, indent=1) + "\n",
                                  what="metrics")

        return _Saver(*args, **kwargs)
