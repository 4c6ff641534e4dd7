"""kseg.detection.boxes against torchvision 0.29's box ops and BoxCoder (pinned in tests/fixtures/torchvision,
see make_detection_reference.py) and against NumPy written out here."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from kseg.detection import boxes as B

REF = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "torchvision" / "boxes.npz")


def test_box_iou_and_area_equal_torchvision_including_an_empty_box_and_a_duplicate():
    iou = np.asarray(B.box_iou(REF["a"], REF["b"]))
    assert iou.shape == (24, 17)
    np.testing.assert_allclose(iou, REF["iou"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(B.box_area(REF["a"])), REF["area"], rtol=1e-6)
    assert np.asarray(B.box_area(REF["a"]))[0] == 0.0


def test_box_iou_by_hand():
    a = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32)
    b = np.array([[1, 1, 3, 3], [5, 5, 6, 6]], np.float32)
    np.testing.assert_allclose(np.asarray(B.box_iou(a, b)), [[1 / 7, 0], [1, 0]], rtol=1e-6)


def test_two_empty_boxes_have_a_nan_iou_as_in_torchvision():
    empty = np.array([[1, 1, 1, 1]], np.float32)
    assert np.isnan(np.asarray(B.box_iou(empty, empty))[0, 0])


def test_clip_and_small_box_mask_equal_torchvision():
    np.testing.assert_array_equal(np.asarray(B.clip_boxes(REF["a"], 30, 45)), REF["clipped"])
    keep = np.asarray(B.small_box_mask(REF["a"], 1.5))
    np.testing.assert_array_equal(keep, REF["small_keep"])
    assert 0 < keep.sum() < len(keep)


def test_small_box_mask_keeps_a_side_equal_to_min_size():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 1.99, 5], [0, 0, 5, 1.99]], np.float32)
    assert np.asarray(B.small_box_mask(boxes, 2.0)).tolist() == [True, False, False]


@pytest.mark.parametrize("name,weights", [("w1", (1, 1, 1, 1)), ("w10", (10, 10, 5, 5))])
def test_box_coder_encode_and_decode_equal_torchvision(name, weights):
    coder = B.BoxCoder(weights)
    np.testing.assert_allclose(np.asarray(coder.encode(REF["gt"], REF["proposals"])), REF[f"encoded_{name}"],
                               rtol=1e-5, atol=1e-5)
    decoded = np.asarray(coder.decode(REF["deltas"], REF["proposals"]))
    assert decoded.shape == (30, 12)
    np.testing.assert_allclose(decoded, REF[f"decoded_{name}"], rtol=1e-5, atol=1e-4)


def test_box_coder_round_trip_and_clip():
    coder = B.BoxCoder((10, 10, 5, 5))
    rng = np.random.default_rng(0)
    anchors = np.concatenate([rng.uniform(0, 50, (20, 2)), rng.uniform(60, 90, (20, 2))], 1).astype(np.float32)
    gt = anchors + rng.normal(0, 3, anchors.shape).astype(np.float32)
    back = np.asarray(coder.decode(coder.encode(gt, anchors), anchors))
    np.testing.assert_allclose(back, gt, atol=1e-4)
    huge = np.array([[0, 0, 100, 100]], np.float32)  # dw = dh = 100 is clamped to log(1000/16)
    w = np.asarray(coder.decode(np.array([[0, 0, 100, 100]], np.float32), np.array([[0, 0, 10, 10]], np.float32)))
    np.testing.assert_allclose(w[0, 2] - w[0, 0], 10 * math.exp(math.log(1000 / 16)), rtol=1e-5)
    assert np.isfinite(np.asarray(coder.decode(huge * 1000, huge))).all()


def test_box_coder_round_trips_through_keras_serialization():
    coder = B.BoxCoder((10, 10, 5, 5), bbox_xform_clip=3.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(coder))
    assert isinstance(again, B.BoxCoder) and again.weights == (10, 10, 5, 5) and again.bbox_xform_clip == 3.0
    with pytest.raises(ValueError, match="4 values"):
        B.BoxCoder((1, 1, 1))
