"""kseg.detection.panoptic: panoptic PNGs, panoptic quality on hand-computed cases, the Panoptic FPN merge."""

from __future__ import annotations

import numpy as np
import pytest

from kseg.detection.panoptic import (combine_semantic_instances, id2rgb, panoptic_quality, read_panoptic_png,
                                     rgb2id, write_panoptic_png)
from kseg.errors import KsegError

CATS = [{"id": 1, "name": "thing", "isthing": 1}, {"id": 2, "name": "stuff", "isthing": 0},
        {"id": 3, "name": "absent", "isthing": 0}]


def test_id_rgb_round_trip_through_a_png(tmp_path):
    ids = np.array([[0, 1, 256], [65536, 1 + 2 * 256 + 3 * 65536, 256 ** 3 - 1]])
    assert id2rgb(ids)[1, 1].tolist() == [1, 2, 3]  # R + 256 G + 256^2 B
    assert id2rgb(ids)[0, 2].tolist() == [0, 1, 0]
    write_panoptic_png(tmp_path / "p.png", ids)
    from PIL import Image

    with Image.open(tmp_path / "p.png") as im:  # an ordinary RGB PNG, as panopticapi reads it
        assert im.mode == "RGB"
        assert np.array_equal(rgb2id(np.asarray(im)), ids)
    assert np.array_equal(read_panoptic_png(tmp_path / "p.png"), ids)


def test_panoptic_png_errors(tmp_path):
    with pytest.raises(KsegError, match="ids must lie in 0..16777215"):
        id2rgb(np.array([[256 ** 3]]))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(KsegError, match="bad.png: not a readable PNG"):
        read_panoptic_png(tmp_path / "bad.png")
    with pytest.raises(KsegError, match="must be HxWx3"):
        rgb2id(np.zeros((2, 2)))


def _case_one():
    gt = np.zeros((4, 6), int)
    gt[:, :3] = 10  # stuff (12 px)
    gt[:2, 3:] = 20  # thing (6 px)
    gt[2:, 3:] = 21  # thing (6 px)
    pred = np.zeros((4, 6), int)
    pred[:, :4] = 1  # stuff, 16 px
    pred[:2, 4:] = 2  # thing, 4 px inside gt 20
    pred[2:, 5] = 3  # thing, 2 px inside gt 21; pred[2:, 4] stays void
    gt_info = [{"id": 10, "category_id": 2, "iscrowd": 0}, {"id": 20, "category_id": 1, "iscrowd": 0},
               {"id": 21, "category_id": 1, "iscrowd": 0}]
    pred_info = [{"id": 1, "category_id": 2}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 1}]
    return (pred, pred_info), (gt, gt_info)


def test_pq_hand_case_matches_and_misses():
    # stuff: pred 1 vs gt 10: intersection 12, union 16 + 12 - 12 = 16 -> IoU 0.75 > 0.5: TP.
    #   PQ = 0.75 / 1 = 0.75, SQ = 0.75, RQ = 1.
    # things: pred 2 vs gt 20: 4 / (4 + 6 - 4) = 2/3: TP; pred 3 vs gt 21: 2 / 6 = 1/3: no match,
    #   so gt 21 is a FN and pred 3 a FP (no void under it). TP 1, FP 1, FN 1: denominator 1 + 0.5 + 0.5 = 2,
    #   PQ = (2/3) / 2 = 1/3, SQ = 2/3, RQ = 1/2.
    # All (categories 1 and 2; category 3 has no segment and is left out): PQ = (0.75 + 1/3) / 2,
    #   SQ = (0.75 + 2/3) / 2, RQ = (1 + 1/2) / 2.
    pred, gt = _case_one()
    r = panoptic_quality([pred], [gt], CATS)
    assert r["Stuff"] == pytest.approx({"pq": 0.75, "sq": 0.75, "rq": 1.0, "n": 1})
    assert r["Things"] == pytest.approx({"pq": 1 / 3, "sq": 2 / 3, "rq": 0.5, "n": 1})
    assert r["All"] == pytest.approx({"pq": (0.75 + 1 / 3) / 2, "sq": (0.75 + 2 / 3) / 2, "rq": 0.75, "n": 2})
    assert r["per_class"][3] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert r["per_class"][1] == pytest.approx({"pq": 1 / 3, "sq": 2 / 3, "rq": 0.5})
    # the same result from panoptic PNG colours
    r_rgb = panoptic_quality([(id2rgb(pred[0]), pred[1])], [(id2rgb(gt[0]), gt[1])], {c["id"]: c for c in CATS})
    assert r_rgb["All"] == r["All"]


def test_pq_void_and_crowd():
    gt = np.zeros((4, 4), int)  # row 0 is void
    gt[2:, :2] = 5  # crowd of category 1 (4 px)
    gt[1:, 2:] = 6  # a category-1 thing (6 px)
    gt[1, :2] = 7  # stuff (2 px)
    gt_info = [{"id": 5, "category_id": 1, "iscrowd": 1}, {"id": 6, "category_id": 1, "iscrowd": 0},
               {"id": 7, "category_id": 2, "iscrowd": 0}]
    pred = np.zeros((4, 4), int)
    pred[:, 2:] = 1  # 8 px: 6 on gt 6, 2 on void
    pred[2:, :2] = 2  # exactly the crowd region
    pred[0, :2] = 3  # 2 px on void ...
    pred[1, 0] = 3  # ... and 1 on gt 7
    pred_info = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 2}]
    # pred 1 vs gt 6: union 8 + 6 - 6 - 2 (pred 1's void pixels) = 6 -> IoU 1.0: TP (0.75 without the void rule).
    # pred 2 lies on the crowd region of its category (4/4 > 0.5): unmatched but not a FP; the crowd is no FN.
    # pred 3 vs gt 7: union 3 + 2 - 1 - 2 = 2 -> IoU 1/2, not > 0.5: gt 7 is a FN; pred 3 is 2/3 void: not a FP.
    # things: TP 1 (IoU 1) -> PQ = SQ = RQ = 1; stuff: FN 1 -> 0, 0, 0; All: 0.5, 0.5, 0.5.
    r = panoptic_quality([(pred, pred_info)], [(gt, gt_info)], CATS)
    assert r["Things"] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1})
    assert r["Stuff"] == pytest.approx({"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1})
    assert r["All"] == pytest.approx({"pq": 0.5, "sq": 0.5, "rq": 0.5, "n": 2})
    # a category-1 prediction only 1/4 inside the crowd (and 0 on void) is a false positive
    pred2 = np.zeros((4, 4), int)
    pred2[3, :] = 9  # 2 px crowd, 2 px gt 6 (IoU 2/8 with gt 6)
    r2 = panoptic_quality([(pred2, [{"id": 9, "category_id": 1}])], [(gt, gt_info)], CATS)
    # things: FP 1 (pred 9: crowd share 2/4 = 0.5, not > 0.5), FN 1 (gt 6) -> PQ 0, RQ 0
    assert r2["Things"] == pytest.approx({"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1})


def test_pq_groups_without_categories_score_none():
    gt = np.full((2, 2), 4)
    r = panoptic_quality([(gt, [{"id": 4, "category_id": 1}])], [(gt, [{"id": 4, "category_id": 1}])],
                         [{"id": 1, "isthing": 1}])
    assert r["Things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert r["Stuff"] == {"pq": None, "sq": None, "rq": None, "n": 0}


def test_pq_errors():
    pred, gt = _case_one()
    with pytest.raises(KsegError, match=r"image 0 \(prediction\): segment id 3 is in the id map and not in"):
        panoptic_quality([(pred[0], pred[1][:2])], [gt], CATS)
    with pytest.raises(KsegError, match=r"segment id\(s\) \[7\] are in segments_info and not in the id map"):
        panoptic_quality([(pred[0], pred[1] + [{"id": 7, "category_id": 1}])], [gt], CATS)
    with pytest.raises(KsegError, match="segment 1 has unknown category_id 9"):
        panoptic_quality([(pred[0], [{"id": 1, "category_id": 9}] + pred[1][1:])], [gt], CATS)
    with pytest.raises(KsegError, match="1 predictions for 2 ground-truth images"):
        panoptic_quality([pred], [gt, gt], CATS)
    with pytest.raises(KsegError, match=r"the prediction is \(4, 5\), the ground truth \(4, 6\)"):
        panoptic_quality([(pred[0][:, :5], pred[1])], [gt], CATS)


def _merge_case():
    semantic = np.zeros((4, 4), int)
    semantic[:, :2] = 2
    semantic[:, 2:] = 3
    masks = np.zeros((5, 4, 4), bool)
    masks[0, :2, :2] = True  # A: score 0.9
    masks[1, :2, 1:3] = True  # B: score 0.8, half of it on A (2/4 = 0.5, not > 0.5): keeps its 2 free pixels
    masks[2, :2, :3] = True  # C: score 0.7, all 6 px already taken: skipped
    masks[3, 2:, 2:] = True  # D: score 0.3, below the score threshold: the loop stops there
    scores = [0.9, 0.8, 0.7, 0.3, 0.95]  # E (index 4): the best score, an empty mask: skipped
    return masks, scores, [1, 1, 1, 1, 1], semantic


def test_combine_semantic_instances_hand_case():
    masks, scores, classes, semantic = _merge_case()
    ids, info = combine_semantic_instances(masks, scores, classes, semantic, stuff_area_threshold=3)
    # A -> 1, B -> 2 (its free pixels), then stuff 2 (the left half less A: 4 px) -> 3, stuff 3 (8 - 2 px) -> 4
    expected = np.array([[1, 1, 2, 4], [1, 1, 2, 4], [3, 3, 4, 4], [3, 3, 4, 4]])
    assert np.array_equal(ids, expected)
    assert [(s["id"], s["isthing"], s["category_id"], s["area"]) for s in info] == [
        (1, True, 1, 4), (2, True, 1, 2), (3, False, 2, 4), (4, False, 3, 6)]
    assert [s.get("instance_id") for s in info] == [0, 1, None, None]
    assert info[0]["score"] == pytest.approx(0.9)


def test_combine_thresholds_and_stuff_classes():
    masks, scores, classes, semantic = _merge_case()
    # stuff 2 keeps 4 px < 5: left void; probabilities are thresholded at 0.5
    ids, info = combine_semantic_instances(masks * 0.6, scores, classes, semantic, stuff_area_threshold=5)
    assert [s["category_id"] for s in info if not s["isthing"]] == [3]
    assert (ids[2:, :2] == 0).all()
    # a stricter overlap threshold drops B; stuff_classes limits the stuff labels; label 0 is never stuff
    semantic[0, 3] = 0
    ids, info = combine_semantic_instances(masks, scores, classes, semantic, overlap_threshold=0.4,
                                           stuff_area_threshold=1, stuff_classes=[3])
    assert [(s["instance_id"] if s["isthing"] else s["category_id"]) for s in info] == [0, 3]
    assert ids[0, 3] == 0 and ids[0, 2] == 2
    with pytest.raises(KsegError, match="do not agree"):
        combine_semantic_instances(masks[:2], scores, classes, semantic)
