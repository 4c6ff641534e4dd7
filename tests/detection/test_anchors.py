"""kseg.detection.anchors against torchvision 0.29's AnchorGenerator (pinned, make_detection_reference.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kseg.detection import anchors as A

REF = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "torchvision" / "anchors.npz")


@pytest.mark.parametrize("name", ["even", "odd"])
def test_maskrcnn_anchors_equal_torchvision(name):
    feats = [tuple(int(v) for v in f) for f in REF[f"{name}_features"]]
    got = np.asarray(A.multilevel_anchors(tuple(REF[f"{name}_image"]), feats))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, REF[f"{name}_anchors"])


def test_several_sizes_and_ratios_in_one_level_equal_torchvision():
    got = np.asarray(A.multilevel_anchors((40, 56), [(5, 7)], ((16, 40),), ((0.25, 1.0, 3.0),)))
    np.testing.assert_array_equal(got, REF["multi_anchors"])


def test_cell_anchors_by_hand_and_the_order_y_x_anchor():
    np.testing.assert_array_equal(A.cell_anchors((32,), (0.5, 1.0, 2.0)),
                                  [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    lv = np.asarray(A.level_anchors(2, 3, 8, 4, (32,), (0.5, 1.0, 2.0)))
    assert lv.shape == (2 * 3 * 3, 4)
    # row (i * W + j) * A + a: cell (1, 2), anchor 1 is the square shifted by x = 2 * 4, y = 1 * 8
    np.testing.assert_array_equal(lv[(1 * 3 + 2) * 3 + 1], [8 - 16, 8 - 16, 8 + 16, 8 + 16])


def test_a_size_count_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 feature maps but 1 anchor size"):
        A.multilevel_anchors((64, 64), [(16, 16), (8, 8)], ((32,),))
