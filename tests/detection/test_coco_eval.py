"""kseg.detection.coco_eval: COCO box and mask AP through pycocotools, on cases with known answers."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from kseg.detection.coco_eval import STATS, coco_evaluate, coco_results, load_coco
from kseg.errors import KsegError


def _rect(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def _gt(tmp_path, anns, images=((1, 64, 64), (2, 64, 64))):
    """A COCO file with categories 3 ("a") and 7 ("b"): classes 1 and 2 in kseg's numbering."""
    doc = {"images": [{"id": i, "file_name": f"{i}.png", "height": h, "width": w} for i, h, w in images],
           "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
           "annotations": [{"id": k + 1, "image_id": im, "category_id": c, "segmentation": _rect(*box),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "area": (box[2] - box[0]) * (box[3] - box[1]), "iscrowd": 0}
                           for k, (im, c, box) in enumerate(anns)]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    return path


ANNS = [(1, 3, (10, 10, 30, 30)), (1, 7, (35, 5, 60, 25)), (2, 3, (5, 20, 45, 60))]


def _perfect(path):
    coco = load_coco(path)
    preds = {}
    for iid in (1, 2):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[iid]))
        preds[iid] = {"boxes": [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                                for a in anns],
                      "scores": [0.9] * len(anns), "classes": [{3: 1, 7: 2}[a["category_id"]] for a in anns],
                      "masks": np.stack([coco.annToMask(a) for a in anns]).astype(bool)}
    return preds


def test_perfect_predictions_score_one(tmp_path):
    preds = _perfect(_gt(tmp_path, ANNS))
    r = coco_evaluate(preds, tmp_path / "gt.json")
    for t in ("bbox", "segm"):
        assert r[t]["AP"] == r[t]["AP50"] == r[t]["AP75"] == 1.0
        assert r[t]["per_class"] == pytest.approx({"a": 1.0, "b": 1.0})
        # 20x20 and 25x20 are small, 40x40 medium, none large
        assert r[t]["APs"] == pytest.approx(1.0) and r[t]["APl"] is None
    # probabilities (>= 0.5 is in) and padding rows (class 0) give the same figures
    for p in preds.values():
        p["masks"] = np.concatenate([p["masks"] * 0.7 + 0.1, np.ones((1, 64, 64))])
        p["boxes"] = np.concatenate([np.asarray(p["boxes"], float), [[0, 0, 64, 64]]])
        p["scores"], p["classes"] = p["scores"] + [0.99], p["classes"] + [0]
    assert coco_evaluate(preds, load_coco(tmp_path / "gt.json"))["segm"]["AP"] == 1.0


def test_one_of_two_missed_and_a_false_positive_ranked_first(tmp_path):
    path = _gt(tmp_path, [(1, 3, (0, 0, 10, 10)), (1, 3, (20, 20, 30, 30))], images=((1, 64, 64),))
    hit = {"boxes": [[0, 0, 10, 10]], "scores": [0.9], "classes": [1]}
    # one detection, right: recall 0.5 at every IoU threshold with precision 1, so of COCO's 101 recall
    # points 0.00, 0.01, ..., 1.00 the 51 up to 0.50 have precision 1 and the other 50 have 0: AP = 51 / 101
    r = coco_evaluate({1: hit}, path, iou_types=("bbox",))["bbox"]
    assert r["AP"] == r["AP50"] == r["AP75"] == pytest.approx(51 / 101)
    assert r["AR100"] == pytest.approx(0.5)
    # a false positive scored above it: after it precision 0 (recall 0), after the hit 1/2 (recall 0.5);
    # precision is made non-increasing from the right, so it is 1/2 at all 51 recall points: AP = 25.5 / 101
    fp_first = {"boxes": [[40, 40, 60, 60], [0, 0, 10, 10]], "scores": [0.95, 0.9], "classes": [1, 1]}
    r = coco_evaluate({1: fp_first}, path, iou_types=("bbox",))["bbox"]
    assert r["AP"] == pytest.approx(25.5 / 101)
    # the same false positive scored below the hit changes nothing: AP = 51 / 101
    fp_last = {"boxes": [[40, 40, 60, 60], [0, 0, 10, 10]], "scores": [0.5, 0.9], "classes": [1, 1]}
    assert coco_evaluate({1: fp_last}, path, iou_types=("bbox",))["bbox"]["AP"] == pytest.approx(51 / 101)
    # no detections at all: AP 0 where there is ground truth
    empty = {"boxes": np.zeros((0, 4)), "scores": [], "classes": [], "masks": np.zeros((0, 64, 64), bool)}
    assert coco_evaluate({1: empty}, path)["segm"]["AP"] == coco_evaluate({}, path)["bbox"]["AP"] == 0.0
    # a ground truth without areas gets them from its masks (COCOeval needs them for small / medium / large)
    doc = json.loads(path.read_text())
    for a in doc["annotations"]:
        del a["area"]
    path.write_text(json.dumps(doc))
    mask = np.zeros((1, 64, 64), bool)
    mask[0, :10, :10] = True
    r = coco_evaluate({1: dict(hit, masks=mask)}, path, iou_types=("segm",))["segm"]
    assert r["APs"] == pytest.approx(51 / 101)
    with pytest.raises(KsegError, match="^predictions for image 1: no masks; mask AP \\(segm\\) needs them$"):
        coco_evaluate({1: hit}, path)


def test_agrees_with_cocoeval_summarize(tmp_path):
    from pycocotools.cocoeval import COCOeval

    from kseg.data.shapes import generate_shapes

    generate_shapes(tmp_path / "ds", images=4, val=0, size=64, seed=1, min_area=16, crowd=0.5)
    gt = load_coco(tmp_path / "ds/train/instances.json")
    rng = np.random.default_rng(0)
    preds, results = {}, {"bbox": [], "segm": []}
    for iid in gt.getImgIds():
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[iid])) if rng.random() < 0.85]
        masks = np.stack([np.roll(gt.annToMask(a), rng.integers(-1, 2, 2), (0, 1)) for a in anns] or
                         [np.zeros((64, 64), np.uint8)])[: len(anns)].astype(bool)
        boxes = [np.add(a["bbox"], rng.normal(0, 1, 4)) for a in anns]
        xyxy = [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in boxes]
        cls = [a["category_id"] if rng.random() < 0.9 else int(rng.integers(1, 6)) for a in anns]
        scores = rng.random(len(anns)).tolist()
        preds[iid] = {"boxes": np.reshape(xyxy, (-1, 4)), "scores": scores, "classes": cls, "masks": masks}
        for b, m, c, s in zip(boxes, masks, cls, scores):  # the results built by hand, as pycocotools documents
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            results["bbox"].append({"image_id": iid, "category_id": c, "bbox": list(map(float, b)), "score": s})
            results["segm"].append({"image_id": iid, "category_id": c, "segmentation": rle, "score": s})
    ours = coco_evaluate(preds, gt)
    for t in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(results[t]), t)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        expected = {k: (None if v < 0 else v) for k, v in zip(STATS, ev.stats)}
        assert {k: ours[t][k] for k in STATS} == pytest.approx(expected)
        assert 0.2 < ours[t]["AP"] < 0.95  # a case that is neither perfect nor empty
        names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
        for k, cat in enumerate(ev.params.catIds):
            p = ev.eval["precision"][:, :, k, 0, 2]
            assert ours[t]["per_class"][names[cat]] == (pytest.approx(p[p > -1].mean()) if (p > -1).any() else None)


def test_category_mapping_and_results(tmp_path):
    path = _gt(tmp_path, ANNS)
    pred = {1: {"boxes": [[1, 2, 4, 8], [0, 0, 1, 1]], "scores": [0.5, 0.4], "classes": [1, 2]}}
    res = coco_results(pred, path)  # default: sorted ids, class 1 = category 3, class 2 = category 7
    assert [(r["category_id"], r["bbox"]) for r in res] == [(3, [1, 2, 3, 6]), (7, [0, 0, 1, 1])]
    res = coco_results(pred, path, category_ids=[0, 7, 3])
    assert [r["category_id"] for r in res] == [7, 3]


def test_errors_name_the_problem(tmp_path):
    path = _gt(tmp_path, ANNS)
    ok = {"boxes": [[0, 0, 5, 5]], "scores": [0.5], "classes": [1], "masks": np.zeros((1, 64, 64), bool)}
    with pytest.raises(KsegError, match="predictions for image 9: the ground truth has no image with that id"):
        coco_evaluate({9: ok}, path)
    with pytest.raises(KsegError, match=r"image 1: masks are \(1, 32, 32\); expected \[N, 64, 64\]"):
        coco_evaluate({1: dict(ok, masks=np.zeros((1, 32, 32)))}, path)
    with pytest.raises(KsegError, match=r"^predictions for image 1: classes must be 0..2 \(0 = padding\); got 3..3$"):
        coco_evaluate({1: dict(ok, classes=[3])}, path)
    with pytest.raises(KsegError, match=r"category_ids \[5\] are not categories of the ground truth \(\[3, 7\]\)"):
        coco_evaluate({1: ok}, path, category_ids=[0, 5])
    with pytest.raises(KsegError, match="nope.json: no such file"):
        coco_evaluate({}, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(KsegError, match="bad.json: malformed JSON"):
        load_coco(tmp_path / "bad.json")
    with pytest.raises(KsegError, match=r"image_ids \[4\] are not images of the ground truth"):
        coco_evaluate({}, path, image_ids=[1, 4])
