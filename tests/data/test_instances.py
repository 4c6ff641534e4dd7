"""kseg.data.instances: the COCO instance record, resizing and joint augmentation, the tf.data pipeline."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from kseg.data.instances import (boxes_from_masks, instance_dataset, load_example, read_instances,
                                 restore_size)
from kseg.errors import KsegError

# image 1 (40 high, 60 wide): three instances, each painted in the image in its own colour
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _write(tmp_path, anns=None, images=None, categories=None) -> "Path":  # noqa: F821
    img = np.zeros((40, 60, 3), np.uint8)
    img[5:25, 4:20] = COLOURS[0]  # polygon, category 7
    img[10:30, 40:58] = COLOURS[1]  # compressed RLE, category 3
    img[30:38, 22:30] = COLOURS[2]  # uncompressed RLE, crowd, category 3
    (tmp_path / "pics").mkdir(exist_ok=True)
    Image.fromarray(img).save(tmp_path / "pics" / "a.png")
    Image.fromarray(img[:32, :32]).save(tmp_path / "pics" / "b.png")
    m1 = np.zeros((40, 60), np.uint8)
    m1[10:30, 40:58] = 1
    rle = mask_utils.encode(np.asfortranarray(m1))
    m2 = np.zeros((40, 60), np.uint8)
    m2[30:38, 22:30] = 1
    flat = m2.T.reshape(-1).astype(int)  # COCO's uncompressed RLE: run lengths in column-major order, 0s first
    counts = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    doc = {"images": images or [{"id": 1, "file_name": "a.png", "height": 40, "width": 60},
                                {"id": 2, "file_name": "b.png"}],
           "categories": categories or [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
           "annotations": anns if anns is not None else [
               {"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[4, 5, 20, 5, 20, 25, 4, 25]],
                "bbox": [4, 5, 16, 20], "iscrowd": 0},
               {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 10, 18, 20], "iscrowd": 0,
                "segmentation": {"size": [40, 60], "counts": rle["counts"].decode()}},
               {"id": 3, "image_id": 1, "category_id": 3, "bbox": [22, 30, 8, 8], "iscrowd": 1,
                "segmentation": {"size": [40, 60], "counts": counts}},
               {"id": 4, "image_id": 2, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 0}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    return tmp_path / "ann.json"


def test_read_instances_maps_categories_and_decodes_masks(tmp_path, capsys):
    rec = read_instances(_write(tmp_path), tmp_path / "pics")
    assert "left out 1 annotation(s) without a segmentation (box only)" in capsys.readouterr().err
    assert rec.class_names == ["background", "three", "seven"] and rec.category_ids == [0, 3, 7]
    assert [(e["id"], e["height"], e["width"]) for e in rec.images] == [(1, 40, 60), (2, 32, 32)]
    image, classes, masks, crowd = rec.load(0)
    assert image.shape == (40, 60, 3) and tuple(image[6, 5]) == COLOURS[0]  # RGB
    assert classes.tolist() == [2, 1, 1] and crowd.tolist() == [False, False, True]
    assert masks.sum((1, 2)).tolist() == [16 * 20, 18 * 20, 64]
    assert boxes_from_masks(masks).tolist() == [[4, 5, 20, 25], [40, 10, 58, 30], [22, 30, 30, 38]]
    assert rec.load(1)[2].shape == (0, 32, 32)


@pytest.mark.parametrize("change, message", [
    ("missing", r"ann.json: image 2: missing image .*pics/b.png$"),
    ("json", r"ann.json: malformed JSON"),
    ("box", r"ann.json: annotation 9: bbox \[50, 10, 12, 5\] \(x, y, width, height\) lies outside image 1 \(60x40\)$"),
    ("category", r"ann.json: annotation 9: category id 5 is not in categories$"),
    ("image", r"ann.json: annotation 9: image id 8 is not in images$"),
])
def test_read_instances_errors_name_the_file(tmp_path, change, message):
    seg = [[1, 1, 5, 1, 5, 5]]
    bad = {"box": {"image_id": 1, "category_id": 3, "bbox": [50, 10, 12, 5], "segmentation": seg},
           "category": {"image_id": 1, "category_id": 5, "segmentation": seg},
           "image": {"image_id": 8, "category_id": 3, "segmentation": seg}}
    path = _write(tmp_path, anns=[dict(bad[change], id=9)] if change in bad else None)
    if change == "missing":
        (tmp_path / "pics" / "b.png").unlink()
    if change == "json":
        path.write_text('{"images": [')
    with pytest.raises(KsegError, match=message):
        read_instances(path, tmp_path / "pics")


def test_resize_keeps_boxes_and_masks_consistent(tmp_path):
    rec = read_instances(_write(tmp_path), tmp_path / "pics")
    ex = load_example(rec, 0, (64, 64), max_instances=5)
    # 40x60 fitted into 64x64: scale 64/60, the image fills rows 0..42 (round(40 * 16/15) = 43), zeros below
    assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.float32
    assert (ex["image"][43:] == 0).all() and ex["image"][:43].any()
    assert ex["classes"].tolist() == [2, 1, 1, 0, 0] and ex["crowd"].tolist() == [False, False, True, False, False]
    assert ex["masks"].shape == (5, 64, 64) and ex["masks"].dtype == np.uint8 and not ex["masks"][3:].any()
    assert np.array_equal(ex["boxes"][:3], boxes_from_masks(ex["masks"][:3]))  # boxes are the masks' tight boxes
    scaled = np.array([[4, 5, 20, 25], [40, 10, 58, 30], [22, 30, 30, 38]]) * 64 / 60
    assert np.abs(ex["boxes"][:3] - scaled).max() <= 1.0  # ... and within a pixel of the scaled COCO boxes
    assert not ex["boxes"][3:].any()
    # restore_size maps them back onto the 40x60 image
    back = restore_size({"boxes": ex["boxes"][:3], "masks": ex["masks"][:3].astype(bool)}, 40, 60, (64, 64))
    assert np.abs(back["boxes"] - [[4, 5, 20, 25], [40, 10, 58, 30], [22, 30, 30, 38]]).max() <= 1.0
    masks = rec.load(0)[2]
    inter, union = (back["masks"] & masks).sum((1, 2)), (back["masks"] | masks).sum((1, 2))
    assert (inter / union > 0.95).all() and back["masks"].shape == (3, 40, 60)


def test_augmentation_moves_image_boxes_and_masks_together(tmp_path):
    rec = read_instances(_write(tmp_path), tmp_path / "pics")
    flips = set()
    for seed in range(8):
        ex = load_example(rec, 0, (64, 64), 4, np.random.default_rng(seed), scale_range=(0.8, 1.6))
        n = int((ex["classes"] > 0).sum())
        assert np.array_equal(ex["boxes"][:n], boxes_from_masks(ex["masks"][:n]))
        for k in range(n):  # under each mask the image holds that instance's colour (interpolated edges aside)
            colour = COLOURS[2] if ex["crowd"][k] else COLOURS[0] if ex["classes"][k] == 2 else COLOURS[1]
            under = ex["image"][ex["masks"][k].astype(bool)]
            assert np.median(under, axis=0).tolist() == list(colour)
        # a flip puts the red square (left in the image) right of the middle
        flips.add(bool(ex["boxes"][0, 0] > 32 * ex["image"].any(2).any(0).sum() / 64))
    assert flips == {True, False}


class _FixedDraws:
    """An rng whose draws are fixed: no flip, scale factor 1.6, crop at the top left."""

    def random(self):
        return 0.9

    def uniform(self, lo, hi):
        return 1.6

    def integers(self, lo, hi):
        return 0


def test_instances_that_leave_the_crop_are_dropped(tmp_path):
    rec = read_instances(_write(tmp_path), tmp_path / "pics")
    # 40x60 fitted to 32x32 (scale 8/15) then jittered by 1.6 (0.8533): 34x51, cropped to its top-left 32x32
    ex = load_example(rec, 0, (32, 32), 3, _FixedDraws())
    # green (x 40..58 -> 34.1..49.5) is out; red (x 4..20, y 5..25) stays; the crowd (y 30..38 -> 25.6..32.4) is cut
    assert ex["classes"].tolist() == [2, 1, 0] and ex["crowd"].tolist() == [False, True, False]
    assert np.abs(ex["boxes"][0] - np.array([4, 5, 20, 25]) * 0.8 * 16 / 15).max() <= 1.0
    assert ex["boxes"][1].tolist() == pytest.approx([22 * 0.8533, 30 * 0.8533, 30 * 0.8533, 32], abs=1)
    assert ex["boxes"][1, 3] == 32  # cut by the crop's edge


def test_more_instances_than_max_keep_the_largest_and_say_so_once(tmp_path, capsys):
    rec = read_instances(_write(tmp_path), tmp_path / "pics")
    capsys.readouterr()
    ex = load_example(rec, 0, (40, 60), max_instances=2)
    assert ex["classes"].tolist() == [2, 1] and ex["crowd"].tolist() == [False, False]  # the 64-px crowd is left
    instance_dataset(rec, (32, 32), max_instances=2)
    err = capsys.readouterr().err
    assert err == (f"kseg: 1 of the 2 images in {rec.path} have more than 2 instances (up to 3); each keeps its 2 "
                   f"largest (max_instances)\n")


def test_instance_dataset_shapes_and_seeded_augmentation(tmp_path):
    from kseg.data.shapes import generate_shapes

    generate_shapes(tmp_path / "ds", images=4, val=0, size=64, seed=0, min_area=16)
    rec = read_instances(tmp_path / "ds/train/instances.json")  # images found in its images/ folder
    assert rec.class_names == ["background", "circle", "square", "triangle", "star", "ellipse"]
    ds = instance_dataset(rec, (64, 64), max_instances=8, batch_size=2, augment=True, seed=3, shuffle=True)
    image, t = next(iter(ds))
    assert image.shape == (2, 64, 64, 3) and image.dtype.name == "float32"
    assert t["boxes"].shape == (2, 8, 4) and t["classes"].shape == (2, 8) and t["classes"].dtype.name == "int32"
    assert t["masks"].shape == (2, 8, 64, 64) and t["masks"].dtype.name == "uint8" and t["crowd"].dtype.name == "bool"
    assert float(image.numpy().max()) > 100 and (t["classes"].numpy() > 0).any()

    def first_epoch(seed):
        return [b[0].numpy() for b in instance_dataset(rec, (64, 64), 8, 2, augment=True, seed=seed, shuffle=True)]

    a, b, c = first_epoch(3), first_epoch(3), first_epoch(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    epochs = [[x[0].numpy() for x in ds] for _ in range(2)]  # each epoch draws anew
    assert not all(np.array_equal(x, y) for x, y in zip(*epochs))
