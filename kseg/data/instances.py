"""COCO instance annotations for training instance segmentation: a record and a fixed-shape tf.data pipeline.

:func:`read_instances` reads a COCO instances JSON and its image folder into an :class:`InstanceRecord`:
the images (path, height, width) and each image's annotations. Categories sorted by id become classes
1..K (0 = background / padding), as torchvision's COCO models number them; ``record.category_ids[k]``
maps class ``k`` back (what :func:`kseg.detection.coco_eval.coco_evaluate` takes). Problems raise one
:class:`~kseg.errors.KsegError` line naming the file: malformed JSON, a missing image, an annotation
of an unknown image or category, a box outside its image (by more than a pixel). Segmentations
(polygons, RLE) are decoded with ``pycocotools.mask`` when an image is loaded; annotations without one
(box only) are left out, said once.

:func:`instance_dataset` yields ``(image, targets)`` with fixed shapes, batched:

- ``image``: ``[H, W, 3]`` float32 RGB in 0..255;
- ``targets["boxes"]``: ``[G, 4]`` float32 ``(x1, y1, x2, y2)`` in pixels of ``image``;
- ``targets["classes"]``: ``[G]`` int32, 0 for the padding rows;
- ``targets["masks"]``: ``[G, H, W]`` uint8 (0/1); ``targets["crowd"]``: ``[G]`` bool.

Each image is scaled to fit ``size`` keeping its aspect ratio (``scale = min(H / h, W / w)``) and placed at
the top left, the rest zero (a letterbox; :func:`restore_size` maps predictions back). Masks are resized
with nearest-neighbour sampling (``cv2.INTER_NEAREST_EXACT``: pixel centres aligned as in the image's
bilinear resize) and the boxes are recomputed from the resized masks (the tight box of the mask's
pixels, ``x2 = last column + 1``), not scaled from the COCO boxes, so boxes and masks always agree (they
stay within a pixel of the scaled COCO boxes); an instance whose mask vanishes is dropped.
Augmentation (``augment=True``), seeded: a horizontal flip (p = 0.5) and a scale jitter (the fitted
scale times a factor drawn from ``scale_range``) with a random crop where the image outgrows ``size``;
boxes are recomputed and vanished instances dropped after it as well.

Crowd regions (``iscrowd=1``) are kept as instances with ``crowd=True``, so that the detection losses
can ignore anchors and proposals that match a crowd box and take no loss on crowd regions (the original
Detectron's rule; Detectron2's and torchvision's training data loaders drop crowd annotations instead,
which makes anchors on a crowd negatives). An image
with more than ``max_instances`` instances keeps its ``max_instances`` largest (by pixels after
resizing and augmentation), said once per dataset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kseg.data.annotations.coco import _coco_doc, _coco_index, _coco_mask
from kseg.errors import KsegError

BOX_TOLERANCE = 1.0  # pixels a box may leave its image by (rounding in annotation tools)


@dataclass
class InstanceRecord:
    """A COCO instance dataset: ``images[i]`` (``id``, ``path``, ``height``, ``width``) and ``annotations[i]``.

    ``annotations[i]`` is a list of ``{"id", "class", "iscrowd", "segmentation"}``; ``class_names[k]`` and
    ``category_ids[k]`` name class ``k`` (``class_names[0] == "background"``, ``category_ids[0] == 0``).
    """

    path: Path
    images: list = field(default_factory=list)
    annotations: list = field(default_factory=list)
    class_names: list = field(default_factory=list)
    category_ids: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int):
        """``(image uint8 [h, w, 3] RGB, classes int32 [N], masks bool [N, h, w], crowd bool [N])`` of image ``i``."""
        import cv2

        info = self.images[i]
        bgr = cv2.imread(str(info["path"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise KsegError(f"{info['path']}: not a readable image")
        h, w = info["height"], info["width"]
        if bgr.shape[:2] != (h, w):
            raise KsegError(f"{self.path}: image {info['id']}: height x width is {h}x{w} but {info['path']} is "
                            f"{bgr.shape[0]}x{bgr.shape[1]}")
        anns = self.annotations[i]
        masks = np.zeros((len(anns), h, w), bool)
        for k, a in enumerate(anns):
            masks[k] = _coco_mask(self.path, a, h, w)
        classes = np.array([a["class"] for a in anns], np.int32)
        crowd = np.array([a["iscrowd"] for a in anns], bool)
        return bgr[..., ::-1], classes, masks, crowd


def _classes(path: Path, categories) -> tuple[list, list]:
    cats = {}
    for c in categories:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise KsegError(f"{path}: each category needs an integer id and a name; got {c!r}")
        if c["id"] in cats:
            raise KsegError(f"{path}: category id {c['id']} appears twice")
        cats[c["id"]] = c["name"]
    if not cats:
        raise KsegError(f"{path}: no categories")
    ids = sorted(cats)
    return ["background", *(cats[i] for i in ids)], [0, *ids]


def _image_entry(path: Path, images_dir: Path, iid, info: dict) -> dict:
    img = images_dir / info["file_name"]
    if not img.is_file():
        raise KsegError(f"{path}: image {iid}: missing image {img}")
    h, w = info.get("height"), info.get("width")
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        from kseg.data.annotations.common import _image_size

        h, w = _image_size(img)
    return {"id": iid, "path": img, "height": h, "width": w}


def _check_box(path: Path, ann: dict, entry: dict) -> None:
    box = ann.get("bbox")
    if box is None:
        return
    where = f"{path}: annotation {ann.get('id')}"
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise KsegError(f"{where}: bbox must be [x, y, width, height]; got {box!r}")
    x, y, bw, bh = box
    h, w, t = entry["height"], entry["width"], BOX_TOLERANCE
    if bw < 0 or bh < 0 or x < -t or y < -t or x + bw > w + t or y + bh > h + t:
        raise KsegError(f"{where}: bbox {box} (x, y, width, height) lies outside image {entry['id']} ({w}x{h})")


def read_instances(annotations_json, images_dir=None) -> InstanceRecord:
    """Read a COCO instances JSON and its images (``file_name`` relative to ``images_dir``, default: the
    JSON's folder, or its ``images/`` sub-folder when that holds them) into an :class:`InstanceRecord`."""
    path = Path(annotations_json).expanduser()
    if not path.is_file():
        raise KsegError(f"{path}: no such file")
    doc, anns = _coco_doc(path)
    class_names, category_ids = _classes(path, doc["categories"])
    cat_to_class = {c: k for k, c in enumerate(category_ids) if k}
    imgs, by_image = _coco_index(path, doc["images"], anns, cat_to_class)
    if not imgs:
        raise KsegError(f"{path}: no images")
    if images_dir is None:
        first = next(iter(imgs.values()))["file_name"]
        images_dir = path.parent / "images" if (path.parent / "images" / first).is_file() else path.parent
    images_dir = Path(images_dir).expanduser()
    record = InstanceRecord(path, class_names=class_names, category_ids=category_ids)
    no_seg = 0
    for iid, info in imgs.items():
        entry = _image_entry(path, images_dir, iid, info)
        kept = []
        for a in by_image[iid]:
            _check_box(path, a, entry)
            if not a.get("segmentation"):
                no_seg += 1
                continue
            kept.append({"id": a.get("id"), "class": cat_to_class[a["category_id"]],
                         "iscrowd": bool(a.get("iscrowd", 0)), "segmentation": a["segmentation"]})
        record.images.append(entry)
        record.annotations.append(kept)
    if no_seg:
        print(f"kseg: {path}: left out {no_seg} annotation(s) without a segmentation (box only)", file=sys.stderr)
    return record


def fit_scale(height: int, width: int, size) -> float:
    """The scale that fits an ``height x width`` image into ``size`` (H, W), keeping its aspect ratio."""
    return min(size[0] / height, size[1] / width)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """``[N, 4]`` float32 tight boxes ``(x1, y1, x2 + 1, y2 + 1)`` of ``[N, H, W]`` masks (zeros for an empty one)."""
    masks = np.asarray(masks, bool)
    cols, rows = masks.any(1), masks.any(2)
    w, h = masks.shape[2], masks.shape[1]
    boxes = np.stack([cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)], 1)
    return np.where(cols.any(1)[:, None], boxes, 0).astype(np.float32)


def _geometry(rng, h: int, w: int, size, scale_range) -> tuple[bool, float, int, int]:
    """``(flip, scale, crop y, crop x)``: none without ``rng``; else a flip, a scale jitter and a random crop."""
    scale = fit_scale(h, w, size)
    if rng is None:
        return False, scale, 0, 0
    flip = bool(rng.random() < 0.5)
    scale *= rng.uniform(*scale_range)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return flip, scale, int(rng.integers(0, max(nh - size[0], 0) + 1)), int(rng.integers(0, max(nw - size[1], 0) + 1))


def load_example(record: InstanceRecord, i: int, size, max_instances: int, rng=None,
                 scale_range=(0.5, 1.5)) -> dict:
    """Image ``i`` resized (and, with ``rng``, augmented) to ``size`` with its targets padded to ``max_instances``.

    Returns ``{"image", "boxes", "classes", "masks", "crowd"}`` as :func:`instance_dataset` yields them.
    """
    import cv2

    image, classes, masks, crowd = record.load(i)
    h, w = image.shape[:2]
    flip, scale, oy, ox = _geometry(rng, h, w, size, scale_range)
    if flip:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    H, W = size
    ch, cw = min(nh - oy, H), min(nw - ox, W)
    out = np.zeros((H, W, 3), np.float32)
    resized = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=cv2.INTER_LINEAR)
    out[:ch, :cw] = resized[oy:oy + ch, ox:ox + cw]
    out_masks = np.zeros((len(masks), H, W), np.uint8)
    for k, m in enumerate(masks):
        small = cv2.resize(np.ascontiguousarray(m, np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
        out_masks[k, :ch, :cw] = small[oy:oy + ch, ox:ox + cw]
    areas = out_masks.sum((1, 2), dtype=np.int64)
    keep = np.nonzero(areas > 0)[0]
    if len(keep) > max_instances:
        keep = np.sort(keep[np.argsort(-areas[keep], kind="stable")[:max_instances]])
    n = len(keep)
    targets = {"boxes": np.zeros((max_instances, 4), np.float32), "classes": np.zeros(max_instances, np.int32),
               "masks": np.zeros((max_instances, H, W), np.uint8), "crowd": np.zeros(max_instances, bool)}
    targets["masks"][:n] = out_masks[keep]
    targets["boxes"][:n] = boxes_from_masks(out_masks[keep])
    targets["classes"][:n] = classes[keep]
    targets["crowd"][:n] = crowd[keep]
    return {"image": out, **targets}


def restore_size(prediction: dict, height: int, width: int, size) -> dict:
    """Map a prediction on the letterboxed ``size`` input back to the ``height x width`` image.

    Boxes are divided by the fitted scale and clipped to the image; masks (``[N, H, W]``; bool, or
    probabilities resized bilinearly) are cropped to the image's part of the input and resized.
    """
    import cv2

    scale = fit_scale(height, width, size)
    out = dict(prediction)
    boxes = np.asarray(prediction["boxes"], np.float32).reshape(-1, 4) / scale
    out["boxes"] = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    if "masks" in prediction:
        masks = np.asarray(prediction["masks"])
        nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
        binary = masks.dtype == bool
        inter = cv2.INTER_NEAREST_EXACT if binary else cv2.INTER_LINEAR
        resized = [cv2.resize(np.ascontiguousarray(m[:nh, :nw], np.uint8 if binary else np.float32), (width, height),
                              interpolation=inter) for m in masks]
        out["masks"] = (np.stack(resized) if resized else np.zeros((0, height, width))).astype(masks.dtype)
    return out


def _say_truncation(record: InstanceRecord, max_instances: int) -> None:
    counts = [len(a) for a in record.annotations]
    over = sum(c > max_instances for c in counts)
    if over:
        print(f"kseg: {over} of the {len(record)} images in {record.path} have more than {max_instances} instances "
              f"(up to {max(counts)}); each keeps its {max_instances} largest (max_instances)", file=sys.stderr)


def instance_dataset(record: InstanceRecord, size=(512, 512), max_instances: int = 100, batch_size: int = 2,
                     augment: bool = False, seed: int = 0, shuffle: bool = False, scale_range=(0.5, 1.5),
                     drop_remainder: bool = False):
    """A ``tf.data.Dataset`` of ``(image, {"boxes", "classes", "masks", "crowd"})`` batches (see the module).

    ``shuffle`` reshuffles the images every epoch and ``augment`` draws new flips, scales and crops every
    epoch, both from ``seed``: the same seed gives the same batches.
    """
    import tensorflow as tf

    if len(record) == 0:
        raise KsegError(f"{record.path}: no images")
    size = (int(size[0]), int(size[1]))
    _say_truncation(record, max_instances)

    def load(i, r):
        rng = np.random.default_rng([seed, int(r) & 0x7FFFFFFF]) if augment else None
        ex = load_example(record, int(i), size, max_instances, rng, scale_range)
        return ex["image"], ex["boxes"], ex["classes"], ex["masks"], ex["crowd"]

    def tf_load(i, r):
        out = tf.numpy_function(load, [i, r], [tf.float32, tf.float32, tf.int32, tf.uint8, tf.bool], stateful=False)
        shapes = [(*size, 3), (max_instances, 4), (max_instances,), (max_instances, *size), (max_instances,)]
        image, boxes, classes, masks, crowd = (tf.ensure_shape(t, s) for t, s in zip(out, shapes))
        return image, {"boxes": boxes, "classes": classes, "masks": masks, "crowd": crowd}

    return indexed_dataset(len(record), tf_load, seed, shuffle, batch_size, drop_remainder)


def indexed_dataset(n: int, tf_load, seed: int, shuffle: bool, batch_size: int, drop_remainder: bool):
    """Batches of ``tf_load(index, random draw)`` over ``range(n)``: shuffled each epoch from ``seed`` when
    ``shuffle``, a new draw per element each epoch (the augmentation's seed), in a deterministic order."""
    import tensorflow as tf

    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(index, draws).map(tf_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
