"""Run a Panoptic FPN on photos of any size and write its panoptic PNG, JSON and overlay.

:class:`PanopticPredictor` resizes and pads a photo as :class:`~kseg.detection.predictor.InstancePredictor`
does (:func:`~kseg.detection.predictor.prepare`), runs the model, scales the boxes back, pastes the
masks into the photo, crops the semantic probabilities to the valid (unpadded) area, resizes them to
the photo (bilinear, ``align_corners=False``) and takes the argmax, then merges things and stuff with
:func:`~kseg.detection.panoptic.combine_semantic_instances` (Detectron2's defaults: overlap 0.5, stuff
area 4096 pixels of the photo, instance score 0.5). Detectron2 resizes the semantic logits, kseg's model
gives probabilities: the argmax can differ where two classes are close.

Segments carry dataset category ids: thing class ``k`` (1..T) is ``thing_ids[k - 1]`` and semantic label
``k`` (1..S) is ``stuff_ids[k - 1]``; by default things are 1..T and stuff T+1..T+S (``kseg shapes``'
numbering). :meth:`PanopticPredictor.from_categories` takes them from COCO panoptic categories (things
and stuff each sorted by id, as :mod:`kseg.data.instances` and :func:`~kseg.detection.panoptic_fpn.semantic_lookup`
number them).

:func:`write_panoptic` writes ``<name>_panoptic.png`` (COCO panoptic PNG, ``id = R + 256 G + 256^2 B``),
``<name>_panoptic.json`` (``segments_info`` with category names) and ``<name>_panoptic_overlay.png``
(:func:`~kseg.detection.panoptic_draw.draw_panoptic`), each atomically; the PNGs carry kseg.predict's
text chunk (:func:`kseg.prediction.save_png`), so kseg.predict may replace them later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kseg.detection.predictor import Instances, prepare
from kseg.errors import KsegError, write_text_atomic

SUFFIXES = {"panoptic": "_panoptic.png", "json": "_panoptic.json", "overlay": "_panoptic_overlay.png"}


@dataclass
class Panoptic:
    """One photo's panoptic result: ``id_map`` [H, W] int32 (0 = void), ``segments_info`` (``id``,
    ``category_id``, ``name``, ``isthing``, ``area``, ``bbox`` xywh, ``iscrowd`` 0, and for things ``score``),
    the model's ``instances`` (all kept detections, pasted) and ``semantic`` [H, W] head labels
    (0 = things, 1..S = stuff)."""

    id_map: np.ndarray
    segments_info: list
    instances: Instances
    semantic: np.ndarray


def panoptic_categories(thing_names, stuff_names, thing_ids=None, stuff_ids=None, colors=None) -> list[dict]:
    """COCO panoptic categories (``id``, ``name``, ``isthing``, ``color``) for a model's classes.

    ``thing_ids`` / ``stuff_ids`` default to 1..T and T+1..T+S; ``colors`` (optional): ``{name: RGB}``."""
    thing_names, stuff_names = list(thing_names), list(stuff_names)
    t, s = len(thing_names), len(stuff_names)
    thing_ids = list(range(1, t + 1)) if thing_ids is None else [int(i) for i in thing_ids]
    stuff_ids = list(range(t + 1, t + s + 1)) if stuff_ids is None else [int(i) for i in stuff_ids]
    if len(thing_ids) != t or len(stuff_ids) != s or len(set(thing_ids + stuff_ids)) != t + s:
        raise KsegError(f"{t} thing and {s} stuff names need as many distinct category ids; got things "
                        f"{thing_ids} and stuff {stuff_ids}")
    cats = [{"id": i, "name": n, "isthing": 1} for i, n in zip(thing_ids, thing_names)]
    cats += [{"id": i, "name": n, "isthing": 0} for i, n in zip(stuff_ids, stuff_names)]
    for c in cats:
        if colors and c["name"] in colors:
            c["color"] = [int(v) for v in colors[c["name"]]]
    return cats


class PanopticPredictor:
    """``PanopticPredictor(model, thing_names, stuff_names).predict(rgb)`` -> :class:`Panoptic` at the photo's size.

    ``model``: a :class:`~kseg.detection.panoptic_fpn.PanopticFPN` (or any model whose output dict adds
    ``semantic`` probabilities to Mask R-CNN's). Names default to ``thing k`` / ``stuff k``.
    """

    def __init__(self, model, thing_names=None, stuff_names=None, thing_ids=None, stuff_ids=None, colors=None,
                 min_size: int = 800, max_size: int = 1333, overlap_threshold: float = 0.5,
                 stuff_area_threshold: int = 4096, instance_score_threshold: float = 0.5):
        import tensorflow as tf

        t, s = model.num_classes - 1, model.num_stuff
        thing_names = list(thing_names) if thing_names is not None else [f"thing {k}" for k in range(1, t + 1)]
        stuff_names = list(stuff_names) if stuff_names is not None else [f"stuff {k}" for k in range(1, s + 1)]
        if (len(thing_names), len(stuff_names)) != (t, s):
            raise KsegError(f"the model predicts {t} thing and {s} stuff classes; got {len(thing_names)} thing "
                            f"and {len(stuff_names)} stuff names")
        self.model = model
        self.categories = panoptic_categories(thing_names, stuff_names, thing_ids, stuff_ids, colors)
        self.thing_cats, self.stuff_cats = self.categories[:t], self.categories[t:]
        self.min_size, self.max_size = min_size, max_size
        self.merge = {"overlap_threshold": overlap_threshold, "stuff_area_threshold": stuff_area_threshold,
                      "instance_score_threshold": instance_score_threshold}
        self._run = tf.function(lambda x, sz: model({"image": x, "image_size": sz}), reduce_retracing=True)

    @classmethod
    def from_categories(cls, model, categories, **kwargs) -> "PanopticPredictor":
        """A predictor for a model trained on a COCO panoptic dataset with these ``categories`` (a list of
        ``{"id", "name", "isthing", "color"?}``): things sorted by id are classes 1..T, stuff labels 1..S."""
        things = sorted((c for c in categories if c.get("isthing")), key=lambda c: c["id"])
        stuff = sorted((c for c in categories if not c.get("isthing")), key=lambda c: c["id"])
        colors = {c["name"]: c["color"] for c in categories if c.get("color")}
        return cls(model, [c["name"] for c in things], [c["name"] for c in stuff], [c["id"] for c in things],
                   [c["id"] for c in stuff], colors=colors, **kwargs)

    def predict(self, image: np.ndarray) -> Panoptic:
        """The panoptic result of one RGB photo ``[H, W, 3]`` (values 0..255)."""
        from kseg.detection.panoptic import combine_semantic_instances

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise KsegError(f"a photo must be HxWx3 RGB; got shape {image.shape}")
        batch, (h, w) = prepare(image, self.min_size, self.max_size)
        out = {k: np.asarray(v[0]) for k, v in self._run(batch, np.array([[h, w]], np.int32)).items()}
        instances = self._instances(out, image.shape[:2], (h, w))
        semantic = semantic_labels(out["semantic"], (h, w), image.shape[:2])
        id_map, segments = combine_semantic_instances(instances.masks, instances.scores, instances.classes,
                                                      semantic, **self.merge)
        return Panoptic(id_map, [self._describe(s, id_map) for s in segments], instances, semantic)

    def _instances(self, out: dict, photo_hw, resized_hw) -> Instances:
        from kseg.detection.masks import paste_masks

        keep = out["valid"].astype(bool)
        ratio = np.array([photo_hw[1] / resized_hw[1], photo_hw[0] / resized_hw[0]] * 2, np.float32)
        boxes = out["boxes"][keep] * ratio
        masks = np.asarray(paste_masks(out["masks"][keep], boxes, photo_hw[0], photo_hw[1]))
        classes = out["classes"][keep]
        return Instances(boxes, out["scores"][keep], classes, masks, [self.thing_cats[c - 1]["name"] for c in classes])

    def _describe(self, segment: dict, id_map) -> dict:
        """A merged segment with the dataset's category id and name, and its bbox."""
        cat = (self.thing_cats if segment["isthing"] else self.stuff_cats)[segment["category_id"] - 1]
        ys, xs = np.nonzero(id_map == segment["id"])
        info = {"id": segment["id"], "category_id": cat["id"], "name": cat["name"], "isthing": int(segment["isthing"]),
                "area": segment["area"], "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                                                  int(np.ptp(ys)) + 1], "iscrowd": 0}
        if "score" in segment:
            info["score"] = round(segment["score"], 4)
        return info


def semantic_labels(probs, resized_hw, photo_hw) -> np.ndarray:
    """Semantic head output ``[H32, W32, C]`` -> ``[H, W]`` int32 labels of the photo: cropped to the valid
    ``resized_hw``, resized bilinearly (half-pixel centres, no antialiasing) to ``photo_hw``, argmax."""
    import tensorflow as tf

    valid = np.asarray(probs, np.float32)[None, : resized_hw[0], : resized_hw[1]]
    resized = tf.image.resize(valid, tuple(photo_hw), method="bilinear", antialias=False)
    return np.asarray(tf.argmax(resized[0], axis=-1, output_type=tf.int32))


def panoptic_paths(out_dir, name: str) -> dict:
    """``{"panoptic", "json", "overlay"}``: the paths :func:`write_panoptic` writes for ``name``."""
    return {k: Path(out_dir) / f"{name}{suffix}" for k, suffix in SUFFIXES.items()}


def panoptic_json(result: Panoptic, name: str, categories) -> dict:
    """The ``<name>_panoptic.json`` document: COCO panoptic's annotation (``file_name``, ``segments_info``)
    with the image's ``height`` and ``width`` and the ``categories``."""
    h, w = result.id_map.shape
    return {"software": "kseg.predict", "file_name": f"{name}{SUFFIXES['panoptic']}", "height": int(h), "width": int(w),
            "segments_info": result.segments_info, "categories": list(categories)}


def write_panoptic(out_dir, name: str, image, result: Panoptic, categories, alpha: float = 0.55) -> dict:
    """Write the panoptic PNG, JSON and overlay of ``result`` (on RGB ``image``) into ``out_dir``; returns
    :func:`panoptic_paths`. Each file is written under a temporary name and renamed into place."""
    from PIL import Image

    from kseg.detection.panoptic import id2rgb
    from kseg.detection.panoptic_draw import draw_panoptic
    from kseg.prediction import save_png

    paths = panoptic_paths(out_dir, name)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_png(paths["panoptic"], Image.fromarray(id2rgb(result.id_map), "RGB"))
    write_text_atomic(paths["json"], json.dumps(panoptic_json(result, name, categories), indent=1), "panoptic JSON")
    overlay = draw_panoptic(image, result.id_map, result.segments_info, categories, alpha=alpha)
    save_png(paths["overlay"], Image.fromarray(overlay, "RGB"))
    return paths
