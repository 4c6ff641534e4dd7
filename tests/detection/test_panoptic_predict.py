"""kseg.detection.panoptic_predict, panoptic_draw and panoptic_eval: photo -> panoptic result -> files and PQ."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kseg.detection.panoptic import read_panoptic_png
from kseg.detection.panoptic_draw import draw_panoptic
from kseg.detection.panoptic_eval import evaluate_panoptic
from kseg.detection.panoptic_predict import (Panoptic, PanopticPredictor, panoptic_categories, semantic_labels,
                                             write_panoptic)
from kseg.errors import KsegError

SMALL = {"backbone": "mobilenetv2", "pre_nms_top_n": 100, "post_nms_top_n": 50, "detections": 10,
         "box_candidates": 200}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from kseg.data.shapes import generate_shapes

    out = tmp_path_factory.mktemp("shapes") / "shapes"
    generate_shapes(out, images=1, val=3, size=64, seed=0)
    return out / "val"


@pytest.fixture(scope="module")
def model():
    from kseg.detection.panoptic_fpn import panoptic_fpn

    return panoptic_fpn(5, 3, **SMALL)


class FixedModel:
    """A stand-in for a trained Panoptic FPN: fixed outputs for a 40x60 photo (padded to 64x64).

    Detection 0: class 2, score 0.9, box x 10..30, y 5..25 with a full mask; detection 1: class 1, score 0.3
    (under the 0.5 score threshold). Semantic: rows 0-19 stuff label 1, rows 20-39 label 2, padding things."""

    num_classes, num_stuff = 3, 2

    def __call__(self, inputs):
        sem = np.zeros((1, 64, 64, 3), np.float32)
        sem[0, :20, :, 1] = sem[0, 20:40, :, 2] = sem[0, 40:, :, 0] = 1.0
        sem[0, :40, 60:, 0] = 1.0  # the padding on the right: things, heavier than stuff there
        return {"boxes": np.array([[[10, 5, 30, 25], [0, 0, 60, 40]]], np.float32),
                "scores": np.array([[0.9, 0.3]], np.float32), "classes": np.array([[2, 1]], np.int32),
                "masks": np.ones((1, 2, 28, 28), np.float32), "valid": np.array([[True, True]]), "semantic": sem}


def test_merge_with_dataset_category_ids():
    cats = [{"id": 20, "name": "b", "isthing": 1}, {"id": 10, "name": "a", "isthing": 1},
            {"id": 7, "name": "sea", "isthing": 0, "color": [0, 0, 200]}, {"id": 5, "name": "sky", "isthing": 0}]
    pred = PanopticPredictor.from_categories(FixedModel(), cats, min_size=40, max_size=60, stuff_area_threshold=1)
    assert [c["id"] for c in pred.categories] == [10, 20, 5, 7]
    result = pred.predict(np.zeros((40, 60, 3), np.uint8))
    segs = {s["id"]: s for s in result.segments_info}
    thing = result.id_map[15, 20]
    assert segs[thing] == {"id": 1, "category_id": 20, "name": "b", "isthing": 1, "area": segs[thing]["area"],
                           "bbox": segs[thing]["bbox"], "iscrowd": 0, "score": 0.9}
    assert (result.id_map[7:23, 12:28] == thing).all() and not (result.id_map[:3] == thing).any()
    assert abs(segs[thing]["area"] - 400) <= 45  # the pasted box, 20x20, give or take its edge pixels
    assert segs[result.id_map[1, 1]]["category_id"] == 5 and segs[result.id_map[38, 58]]["category_id"] == 7
    assert sum(s["area"] for s in segs.values()) == 40 * 60  # no void, the padding cropped away
    assert len(result.instances.scores) == 2 and result.instances.names == ["b", "a"]
    np.testing.assert_array_equal(np.unique(result.semantic), [1, 2])


def test_semantic_labels_crop_then_resize():
    probs = np.zeros((8, 8, 3), np.float32)
    probs[:, :, 0] = 1.0  # padding: class 0
    probs[:4, :2, 1] = 2.0
    probs[:4, 2:6, 2] = 2.0  # valid area 4x6: left third class 1, the rest class 2
    labels = semantic_labels(probs, (4, 6), (8, 12))
    assert labels.shape == (8, 12) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels[:, :4], 1)
    np.testing.assert_array_equal(labels[:, 4:], 2)


def test_real_model_on_a_photo_and_the_files(model, tmp_path):
    pred = PanopticPredictor(model, ["circle", "square", "triangle", "star", "ellipse"], ["sky", "ground", "water"],
                             min_size=64, max_size=96, instance_score_threshold=0.0, stuff_area_threshold=16)
    photo = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    result = pred.predict(photo)
    assert result.id_map.shape == result.semantic.shape == (50, 70)
    assert result.instances.masks.shape[1:] == (50, 70)
    ids = set(np.unique(result.id_map).tolist()) - {0}
    assert ids == {s["id"] for s in result.segments_info} and ids
    for s in result.segments_info:
        assert s["area"] == int((result.id_map == s["id"]).sum()) and 1 <= s["category_id"] <= 8
    paths = write_panoptic(tmp_path / "out", "photo", photo, result, pred.categories)
    assert [p.name for p in paths.values()] == ["photo_panoptic.png", "photo_panoptic.json",
                                                "photo_panoptic_overlay.png"]
    np.testing.assert_array_equal(read_panoptic_png(paths["panoptic"]), result.id_map)
    doc = json.loads(paths["json"].read_text())
    assert doc["file_name"] == "photo_panoptic.png" and (doc["height"], doc["width"]) == (50, 70)
    assert {s["name"] for s in doc["segments_info"]} <= {c["name"] for c in pred.categories}
    from kseg.prediction import is_kseg_output

    assert is_kseg_output(paths["panoptic"]) and is_kseg_output(paths["overlay"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())
    with pytest.raises(KsegError, match="a photo must be HxWx3 RGB; got shape"):
        pred.predict(np.zeros((5, 5)))
    with pytest.raises(KsegError, match="the model predicts 5 thing and 3 stuff classes; got 1 thing and 3 stuff"):
        PanopticPredictor(model, ["x"], ["a", "b", "c"])


def _gt(shapes, i=0):
    doc = json.loads((shapes / "panoptic.json").read_text())
    ann = doc["annotations"][i]
    return doc, ann, read_panoptic_png(shapes / "panoptic" / ann["file_name"])


def test_overlay_of_ground_truth(shapes):
    import cv2

    doc, ann, ids = _gt(shapes)
    image = cv2.imread(str(shapes / "images" / ann["file_name"]))[..., ::-1]
    out = draw_panoptic(image, ids, ann["segments_info"], doc["categories"], alpha=0.5, labels=False)
    assert out.shape[1:] == (64, 3) and out.shape[0] > 64  # the legend strip below
    sky = next(s for s in ann["segments_info"] if s["category_id"] == 6)
    y, x = np.argwhere(ids == sky["id"])[0]
    want = (image[y, x] * 0.5 + np.array(doc["categories"][5]["color"]) * 0.5).astype(np.uint8)
    assert np.abs(out[y, x].astype(int) - want).max() <= 1
    assert (out[64:] == 255).mean() > 0.5  # a white strip with swatches and names
    with pytest.raises(KsegError, match=r"category id\(s\) \[99\] are not among the categories"):
        draw_panoptic(image, ids, [{"id": 1, "category_id": 99}], doc["categories"])
    with pytest.raises(KsegError, match=r"image \(64, 64, 3\) and id map \(2, 2\) differ in size"):
        draw_panoptic(image, ids[:2, :2], [], doc["categories"])


class TruthPredictor:
    """Predicts the ground truth of each image, in the JSON's order, with ``change`` applied to one."""

    def __init__(self, shapes, change=None):
        doc = json.loads((shapes / "panoptic.json").read_text())
        self.items = [(read_panoptic_png(shapes / "panoptic" / a["file_name"]), a["segments_info"])
                      for a in doc["annotations"]]
        if change:
            self.items[0] = change(*self.items[0])

    def predict(self, image):
        ids, info = self.items.pop(0)
        assert ids.shape == image.shape[:2]
        return Panoptic(ids, info, None, None)


def test_ground_truth_scores_one_and_a_missed_thing_costs_its_class(shapes):
    perfect = evaluate_panoptic(TruthPredictor(shapes), shapes / "panoptic.json")
    assert perfect["images"] == 3
    for group in ("All", "Things", "Stuff"):
        assert perfect[group]["pq"] == perfect[group]["sq"] == perfect[group]["rq"] == 1.0
    doc, ann, _ = _gt(shapes)
    counts = np.bincount([s["category_id"] for a in doc["annotations"] for s in a["segments_info"]], minlength=9)
    lost = max((s for s in ann["segments_info"] if s["category_id"] <= 5), key=lambda s: counts[s["category_id"]])
    n = counts[lost["category_id"]]
    assert n >= 2  # another thing of its class stays matched

    def drop(ids, info):
        return np.where(ids == lost["id"], 0, ids), [s for s in info if s["id"] != lost["id"]]

    r = evaluate_panoptic(TruthPredictor(shapes, drop), shapes / "panoptic.json", shapes / "panoptic",
                          shapes / "images")
    name = next(c["name"] for c in doc["categories"] if c["id"] == lost["category_id"])
    # TP n - 1 (IoU 1), FN 1: PQ = RQ = (n - 1) / (n - 1 + 0.5), SQ = 1
    assert r["per_class"][name] == pytest.approx({"id": lost["category_id"], "pq": (n - 1) / (n - 0.5),
                                                  "sq": 1.0, "rq": (n - 1) / (n - 0.5)})
    assert r["Stuff"]["pq"] == 1.0 and r["Things"]["pq"] < 1.0


def test_evaluate_a_real_model(model, shapes):
    doc = json.loads((shapes / "panoptic.json").read_text())
    pred = PanopticPredictor.from_categories(model, doc["categories"], min_size=64, max_size=64,
                                             stuff_area_threshold=64)
    r = evaluate_panoptic(pred, shapes / "panoptic.json", limit=2)
    assert r["images"] == 2 and set(r["per_class"]) == {c["name"] for c in doc["categories"]}
    assert all(0.0 <= v["pq"] <= 1.0 for v in r["per_class"].values())
    assert r["All"]["n"] >= 1 and 0.0 <= r["All"]["pq"] <= 1.0


def test_evaluation_errors(shapes, tmp_path):
    with pytest.raises(KsegError, match=r"nope\.json: no such file"):
        evaluate_panoptic(None, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(KsegError, match="a COCO panoptic file needs lists 'images', 'annotations' and 'categories'"):
        evaluate_panoptic(None, tmp_path / "bad.json")
    with pytest.raises(KsegError, match=r"masks: no such panoptic PNG folder"):
        evaluate_panoptic(None, shapes / "panoptic.json", panoptic_dir=tmp_path / "masks")
    doc = json.loads((shapes / "panoptic.json").read_text())
    doc["annotations"][0]["image_id"] = 999
    (tmp_path / "panoptic.json").write_text(json.dumps(doc))
    with pytest.raises(KsegError, match="annotation 0 needs an image_id of one of its images and a file_name"):
        evaluate_panoptic(None, tmp_path / "panoptic.json", shapes / "panoptic", shapes / "images")


def test_category_id_errors():
    with pytest.raises(KsegError, match=r"2 thing and 1 stuff names need as many distinct category ids"):
        panoptic_categories(["a", "b"], ["c"], thing_ids=[1, 2], stuff_ids=[2])
