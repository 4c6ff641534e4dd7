"""kseg.data.panoptic_data: the semantic labels go through the same flip, scale and crop as the instance masks."""

from __future__ import annotations

import numpy as np
import pytest

from kseg.data.instances import read_instances
from kseg.data.panoptic_data import load_panoptic_example, panoptic_dataset, semantic_from_panoptic
from kseg.detection.panoptic_fpn import IGNORE, semantic_lookup
from kseg.errors import KsegError


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    from kseg.data.shapes import generate_shapes

    out = tmp_path_factory.mktemp("shapes") / "shapes"
    generate_shapes(out, images=3, val=0, size=64, seed=1)
    return out / "train"


def test_semantic_labels_follow_the_masks_under_augmentation(split):
    record = read_instances(split / "instances.json")
    table = semantic_lookup([6, 7, 8])
    for draw in range(6):
        for i in range(len(record)):
            rng = np.random.default_rng([draw, i])
            ex = load_panoptic_example(record, split / "semantic", i, table, (48, 80), 20, rng)
            things = ex["masks"].any(0)  # in kseg shapes every thing pixel is some instance's
            np.testing.assert_array_equal(ex["semantic"] == 0, things)
            inside = ex["image"].any(-1)  # the letterbox is black, the textures never are
            np.testing.assert_array_equal(ex["semantic"] == IGNORE, ~inside)
            assert set(np.unique(ex["semantic"][inside]).tolist()) <= {0, 1, 2, 3}


def test_dataset_batches(split):
    record = read_instances(split / "instances.json")
    ds = panoptic_dataset(record, split / "semantic", [6, 7, 8], size=(64, 64), max_instances=8, batch_size=2,
                          augment=True, seed=3)
    image, targets = next(iter(ds))
    assert image.shape == (2, 64, 64, 3) and targets["semantic"].shape == (2, 64, 64)
    assert set(targets) == {"boxes", "classes", "masks", "crowd", "semantic"}
    sem, masks = targets["semantic"].numpy(), targets["masks"].numpy()
    np.testing.assert_array_equal(sem == 0, masks.any(1) & (sem != IGNORE))
    with pytest.raises(KsegError, match="nowhere: no such folder of category maps"):
        panoptic_dataset(record, split / "nowhere", [6, 7, 8])


def test_semantic_from_panoptic_and_map_errors(split, tmp_path):
    import cv2

    ids = np.array([[0, 5], [9, 9]])
    np.testing.assert_array_equal(semantic_from_panoptic(ids, [{"id": 5, "category_id": 7},
                                                               {"id": 9, "category_id": 2}]), [[0, 7], [2, 2]])
    with pytest.raises(KsegError, match=r"category id 300 does not fit a uint8 category map"):
        semantic_from_panoptic(ids, [{"id": 5, "category_id": 300}])
    record = read_instances(split / "instances.json")
    cv2.imwrite(str(tmp_path / "000001.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(KsegError, match=r"000001\.png: a category map must be a one-channel 8-bit PNG of 64x64"):
        load_panoptic_example(record, tmp_path, 0, semantic_lookup([6]), (64, 64), 4)
    with pytest.raises(KsegError, match=r"000002\.png: no such category map or not readable"):
        load_panoptic_example(record, tmp_path, 1, semantic_lookup([6]), (64, 64), 4)
