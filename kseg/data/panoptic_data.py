"""Training data for Panoptic FPN: :mod:`kseg.data.instances`' pipeline plus the semantic head's labels.

:func:`panoptic_dataset` yields what :func:`kseg.data.instances.instance_dataset` yields, and
``targets["semantic"]``: ``[H, W]`` uint8 labels of the semantic head (0 = things, 1..S = stuff in
increasing category id, 255 = ignore; :func:`kseg.detection.panoptic_fpn.semantic_lookup`). The labels
come from a folder of category-id maps (one PNG per image, named as the image with ``.png``: ``kseg
shapes``' ``semantic/`` folder) and go through the image's own flip, scale and crop (nearest-neighbour,
``cv2.INTER_NEAREST_EXACT``, as the instance masks); the letterbox outside the image is 255, as
Detectron2 pads its semantic targets. :func:`semantic_from_panoptic` makes such a map from a COCO panoptic
PNG for datasets that have none.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from kseg.data.instances import InstanceRecord, _geometry, indexed_dataset, load_example
from kseg.detection.panoptic_fpn import IGNORE, semantic_lookup
from kseg.errors import KsegError


def semantic_from_panoptic(id_map, segments_info, void: int = 0) -> np.ndarray:
    """A uint8 map of category ids from a panoptic ``id_map`` and its ``segments_info`` (``void`` elsewhere)."""
    ids = np.asarray(id_map)
    out = np.full(ids.shape, void, np.uint8)
    for s in segments_info:
        if not 0 < int(s["category_id"]) < 255:
            raise KsegError(f"category id {s['category_id']} does not fit a uint8 category map (1..254)")
        out[ids == s["id"]] = s["category_id"]
    return out


def _semantic_path(record: InstanceRecord, semantic_dir: Path, i: int) -> Path:
    return semantic_dir / (Path(record.images[i]["path"]).stem + ".png")


def load_semantic(record: InstanceRecord, semantic_dir, i: int, table: np.ndarray, size, rng=None,
                  scale_range=(0.5, 1.5)) -> np.ndarray:
    """Image ``i``'s semantic labels ``[H, W]`` (``size``), flipped, scaled and cropped as :func:`load_example`
    does with an ``rng`` in the same state."""
    import cv2

    path = _semantic_path(record, Path(semantic_dir), i)
    cats = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if cats is None:
        raise KsegError(f"{path}: no such category map or not readable")
    info = record.images[i]
    if cats.ndim != 2 or cats.shape != (info["height"], info["width"]) or cats.dtype != np.uint8:
        raise KsegError(f"{path}: a category map must be a one-channel 8-bit PNG of {info['width']}x{info['height']} "
                        f"pixels like its image; got {cats.dtype} {cats.shape}")
    labels = table[cats]
    h, w = labels.shape
    flip, scale, oy, ox = _geometry(rng, h, w, size, scale_range)
    if flip:
        labels = labels[:, ::-1]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    ch, cw = min(nh - oy, size[0]), min(nw - ox, size[1])
    out = np.full(tuple(size), IGNORE, np.uint8)
    small = cv2.resize(np.ascontiguousarray(labels), (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    out[:ch, :cw] = small[oy:oy + ch, ox:ox + cw]
    return out


def load_panoptic_example(record: InstanceRecord, semantic_dir, i: int, table: np.ndarray, size,
                          max_instances: int, rng=None, scale_range=(0.5, 1.5)) -> dict:
    """:func:`load_example`'s dict plus ``semantic``, both under the same flip, scale and crop."""
    twin = copy.deepcopy(rng)
    ex = load_example(record, i, size, max_instances, rng, scale_range)
    ex["semantic"] = load_semantic(record, semantic_dir, i, table, size, twin, scale_range)
    return ex


def panoptic_dataset(record: InstanceRecord, semantic_dir, stuff_ids, size=(512, 512), max_instances: int = 100,
                     batch_size: int = 2, augment: bool = False, seed: int = 0, shuffle: bool = False,
                     scale_range=(0.5, 1.5), drop_remainder: bool = False):
    """A ``tf.data.Dataset`` of ``(image, {"boxes", "classes", "masks", "crowd", "semantic"})`` batches.

    ``stuff_ids``: the stuff categories' ids (sorted, they become labels 1..S; every other id in the maps is a
    thing). Shuffling and augmentation are :func:`kseg.data.instances.instance_dataset`'s, from ``seed``.
    """
    import tensorflow as tf

    if len(record) == 0:
        raise KsegError(f"{record.path}: no images")
    semantic_dir = Path(semantic_dir)
    if not semantic_dir.is_dir():
        raise KsegError(f"{semantic_dir}: no such folder of category maps")
    size = (int(size[0]), int(size[1]))
    table = semantic_lookup(stuff_ids)
    keys = ("image", "boxes", "classes", "masks", "crowd", "semantic")

    def load(i, r):
        rng = np.random.default_rng([seed, int(r) & 0x7FFFFFFF]) if augment else None
        ex = load_panoptic_example(record, semantic_dir, int(i), table, size, max_instances, rng, scale_range)
        return tuple(ex[k] for k in keys)

    def tf_load(i, r):
        types = [tf.float32, tf.float32, tf.int32, tf.uint8, tf.bool, tf.uint8]
        out = tf.numpy_function(load, [i, r], types, stateful=False)
        shapes = [(*size, 3), (max_instances, 4), (max_instances,), (max_instances, *size), (max_instances,), size]
        image, *targets = (tf.ensure_shape(t, s) for t, s in zip(out, shapes))
        return image, dict(zip(keys[1:], targets))

    return indexed_dataset(len(record), tf_load, seed, shuffle, batch_size, drop_remainder)
