"""kseg.data.shapes: the synthetic COCO instance / panoptic dataset and the ``kseg shapes`` command."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from kseg import cli
from kseg.data import shapes
from kseg.detection.panoptic import read_panoptic_png
from kseg.errors import KsegError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "ds"
    shapes.generate_shapes(out, images=6, val=2, size=64, seed=3, max_objects=6, min_area=20, crowd=0.5)
    return out


def test_layout_and_coco_files(dataset):
    from pycocotools.coco import COCO

    assert sorted(p.name for p in dataset.iterdir()) == ["train", "val"]
    train = dataset / "train"
    assert sorted(p.name for p in (train / "images").iterdir()) == [f"{i:06d}.png" for i in range(1, 7)]
    coco = COCO(str(train / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "square", "triangle", "star",
                                                                     "ellipse"]
    assert sorted(coco.getImgIds()) == list(range(1, 7))
    pan = json.loads((train / "panoptic.json").read_text())
    assert [(c["name"], c["isthing"]) for c in pan["categories"][5:]] == [("sky", 0), ("ground", 0), ("water", 0)]
    assert len(json.loads((dataset / "val" / "instances.json").read_text())["images"]) == 2
    assert any(a["iscrowd"] for a in coco.dataset["annotations"])  # crowd=0.5 over 6 images with seed 3


def test_instances_panoptic_and_semantic_agree(dataset):
    train = dataset / "train"
    inst = json.loads((train / "instances.json").read_text())
    pan = json.loads((train / "panoptic.json").read_text())
    for im, pa in zip(inst["images"], pan["annotations"]):
        ids = read_panoptic_png(train / "panoptic" / pa["file_name"])
        sem = cv2.imread(str(train / "semantic" / pa["file_name"]), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(train / "images" / im["file_name"]))
        assert image.shape == (64, 64, 3) and sem.shape == ids.shape == (64, 64)
        assert set(np.unique(sem).tolist()) <= set(range(1, 9))  # every pixel has a category: no void
        assert set(np.unique(ids).tolist()) == {s["id"] for s in pa["segments_info"]}
        things = [a for a in inst["annotations"] if a["image_id"] == im["id"]]
        by_id = {s["id"]: s for s in pa["segments_info"]}
        assert sum(s["category_id"] <= 5 for s in pa["segments_info"]) == len(things)
        for s in pa["segments_info"]:
            m = ids == s["id"]
            assert s["area"] == m.sum() and (sem[m] == s["category_id"]).all()
            ys, xs = np.nonzero(m)
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        for a in things:
            m = mask_utils.decode(a["segmentation"]).astype(bool)
            match = [s for s in by_id.values() if (ids == s["id"]).sum() == m.sum() and (ids[m] == s["id"]).all()]
            assert len(match) == 1 and match[0]["category_id"] == a["category_id"]
            assert match[0]["iscrowd"] == a["iscrowd"] and a["area"] == m.sum() and a["bbox"] == match[0]["bbox"]
            assert a["area"] >= 20  # min_area


def test_same_seed_same_data_and_images_do_not_depend_on_the_count(tmp_path, dataset):
    shapes.generate_shapes(tmp_path / "a", images=2, val=0, size=64, seed=3, min_area=20, crowd=0.5)
    for name in ("000001.png", "000002.png"):
        for sub in ("images", "panoptic", "semantic"):
            assert (tmp_path / "a/train" / sub / name).read_bytes() == (dataset / "train" / sub / name).read_bytes()
    assert not (tmp_path / "a" / "val").exists()
    shapes.generate_shapes(tmp_path / "b", images=1, val=0, size=64, seed=4, min_area=20, crowd=0.5)
    first = (tmp_path / "a/train/images/000001.png").read_bytes()
    assert (tmp_path / "b/train/images/000001.png").read_bytes() != first


def test_occlusion_keeps_what_stays_visible_and_drops_small_remains():
    base = np.zeros((10, 10), bool)
    bottom, middle, top = base.copy(), base.copy(), base.copy()
    bottom[:, :6] = True  # 60 px
    middle[:, 4:] = True  # 60 px
    top[:, 3:] = True  # 70 px: covers all of middle and 3 columns of bottom
    things = [{"mask": bottom, "c": 0}, {"mask": middle, "c": 1}, {"mask": top, "c": 2}]
    kept = shapes._visible(things, min_area=25)
    assert [t["c"] for t in kept] == [0, 2]  # middle has 0 visible pixels: dropped
    assert kept[0]["mask"].sum() == 30 and not (kept[0]["mask"] & top).any()
    # top-first check: a dropped thing hides nothing, so the thing below it keeps those pixels
    small_top = base.copy()
    small_top[0, 0] = True
    kept = shapes._visible([{"mask": bottom, "c": 0}, {"mask": small_top, "c": 3}], min_area=2)
    assert [t["c"] for t in kept] == [0] and kept[0]["mask"].sum() == 60


def test_refuses_a_folder_that_is_not_empty_and_bad_options(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(KsegError, match=r"full: exists and is not an empty folder; choose a new folder$"):
        shapes.generate_shapes(tmp_path / "full", images=1, val=0, size=32)
    assert (tmp_path / "full" / "x.txt").read_text() == "mine"
    with pytest.raises(KsegError, match=r"^--size must be 32..4096 pixels$"):
        shapes.generate_shapes(tmp_path / "n", size=16)
    with pytest.raises(KsegError, match=r"^--crowd must be a probability, 0..1$"):
        shapes.generate_shapes(tmp_path / "n", crowd=2)
    with pytest.raises(KsegError, match=r"^--images must be at least 1$"):
        shapes.generate_shapes(tmp_path / "n", images=0)
    assert not (tmp_path / "n").exists()
    (tmp_path / "empty").mkdir()
    shapes.generate_shapes(tmp_path / "empty", images=1, val=1, size=32, min_area=4)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["train", "val"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_kseg_shapes_command(tmp_path, capsys):
    assert cli.main(["shapes", str(tmp_path / "out"), "--images", "2", "--val", "1", "--size", "32",
                     "--min-area", "4", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kseg: wrote 2 train and 1 val images (32x32; 5 thing and 3 stuff classes) to ")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["shapes", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kseg: error: ") and "exists and is not an empty folder" in err and err.count("\n") == 1
