"""kseg predict, evaluate and export with an instance model: a small seeded Mask R-CNN on a tiny shapes dataset."""

import json
import re

import numpy as np
import pytest
from conftest import tiny_model
from PIL import Image

from kseg.errors import KsegError

NAMES = ["background", "circle", "square", "triangle", "star", "ellipse"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """``(root, model)``: root/data (4 val images of 96x96), root/run/best.keras with its run.json."""
    import keras

    from kseg.data.shapes import generate_shapes
    from kseg.detection.maskrcnn import MaskRCNN

    root = tmp_path_factory.mktemp("instances")
    generate_shapes(root / "data", images=1, val=4, size=96, seed=0)
    keras.utils.set_random_seed(0)
    model = MaskRCNN(num_classes=6, backbone="resnet50", pre_nms_top_n=100, post_nms_top_n=50, detections=10)
    model.build((None, None, None, 3))
    kernel, bias = model.box_head.cls_score.get_weights()
    model.box_head.cls_score.set_weights([kernel * 20, bias])  # peaked scores: detections above 0.5
    (root / "run").mkdir()
    model.save(root / "run" / "best.keras")
    (root / "run" / "run.json").write_text(json.dumps({"class_names": NAMES[1:], "min_size": 96, "max_size": 160}))
    return root, model


def _fails(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kseg: error: ")
    return err[-1][len("kseg: error: "):]


def test_predict_writes_overlay_json_and_ids(world, tmp_path, capsys):
    from kseg.predict import main

    root, _ = world
    images = root / "data" / "val" / "images"
    argv = ["--model", str(root / "run" / "best.keras"), str(images), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert re.search(r"kseg: wrote \d+ instances \(score >= 0\.5\) of 4 image\(s\) to .*_ids\.png\) in", out.out)
    assert "6 classes (background, circle, square, triangle, star, ...)" in out.err
    doc = json.loads((tmp_path / "o" / "000001_instances.json").read_text())
    assert doc["software"] == "kseg.predict" and (doc["width"], doc["height"]) == (96, 96)
    assert doc["score_threshold"] == 0.5 and doc["instances"], "the peaked random model finds something"
    first = doc["instances"][0]
    assert first["id"] == 1 and first["name"] == NAMES[first["class"]] and first["score"] >= 0.5
    ids = np.asarray(Image.open(tmp_path / "o" / "000001_ids.png"))
    assert ids.dtype == np.uint16 and ids.shape == (96, 96)
    assert set(np.unique(ids)) - {0} <= {i["id"] for i in doc["instances"]}
    overlay = np.asarray(Image.open(tmp_path / "o" / "000001_instances.png").convert("RGB"))
    assert (overlay != np.asarray(Image.open(images / "000001.png").convert("RGB"))).any()
    assert main(argv) == 0  # its own outputs are replaced
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "000002_instances.json").write_text("{}")
    argv[-2] = str(tmp_path / "mine")
    msg = _fails(main, argv, capsys)
    assert msg == (f"{tmp_path / 'mine' / '000002_instances.json'} exists and kseg.predict did not write it: it is "
                   f"left alone; choose another --out or move the file")


def test_predict_refuses_semantic_options(world, tmp_path, capsys):
    from kseg.predict import main

    root, _ = world
    model = str(root / "run" / "best.keras")
    image = str(root / "data" / "val" / "images" / "000001.png")
    msg = _fails(main, ["--model", model, image, "--out", str(tmp_path), "--runtime", "keras", "--flip"], capsys)
    assert msg == f"{model}: --runtime, --flip apply to semantic models; this is an instance model (use --score-threshold)"
    msg = _fails(main, ["--model", model, image, "--out", str(tmp_path), "--score-threshold", "2"], capsys)
    assert msg == "bad --score-threshold 2.0: give a score between 0 and 1, e.g. 0.5"
    tiny_model().save(tmp_path / "sem.keras")
    msg = _fails(main, ["--model", str(tmp_path / "sem.keras"), image, "--out", str(tmp_path / "o"),
                        "--score-threshold", "0.3"], capsys)
    assert msg == f"{tmp_path / 'sem.keras'}: --score-threshold applies to instance models; this is a semantic model"


def test_export_serves_what_the_predictor_predicts(world, tmp_path, capsys):
    import kseg
    from kseg.detection.predictor import InstancePredictor
    from kseg.detection.serving import ExportedInstanceModel
    from kseg.export import main

    root, model = world
    keras_file = str(root / "run" / "best.keras")
    assert main(["--model", keras_file, "--out", str(tmp_path / "sm")]) == 0
    assert "one uint8 image in; boxes, classes, scores, masks out" in capsys.readouterr().out
    served = kseg.load_model(tmp_path / "sm")
    assert isinstance(served, ExportedInstanceModel) and served.class_names == NAMES
    image = np.random.default_rng(3).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    image[20:70, 30:90] = (230, 40, 40)
    want = InstancePredictor(model, NAMES, 96, 160).predict(image)
    got = served.predict(image)
    assert len(want.scores) == len(got.scores) > 0 and got.masks.shape[1:] == (100, 130)
    np.testing.assert_array_equal(got.classes, want.classes)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    np.testing.assert_allclose(got.masks, want.masks, atol=1e-4)
    msg = _fails(main, ["--model", keras_file, "--out", str(tmp_path / "m.onnx"), "--format", "onnx"], capsys)
    assert msg == f"{keras_file}: an instance model exports as --format saved_model only (not onnx)"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    msg = _fails(main, ["--model", keras_file, "--out", str(tmp_path / "taken")], capsys)
    assert msg == (f"{tmp_path / 'taken'} exists and is not an instance SavedModel kseg wrote: it is left alone; "
                   f"choose another --out")


def test_evaluate_scores_and_draws_the_worst(world, tmp_path, capsys):
    from kseg.evaluate import main

    root, _ = world
    coco = str(root / "data" / "val" / "instances.json")
    model = str(root / "run" / "best.keras")
    assert main(["--model", model, "--coco", coco, "--out", str(tmp_path / "e"), "--worst", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^kseg: mask AP \d\.\d{3}, box AP \d\.\d{3} \(4 images\)$", out, re.M)
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["images"] == 4 and set(report["mask"]["per_class"]) == set(NAMES[1:])
    assert len(report["per_image"]) == 4 and len(report["worst"]) == 2
    assert report["classes_matched_by"] == "names"
    with Image.open(tmp_path / "e" / "worst.png") as im:
        assert im.info.get("Software") == "kseg.evaluate" and im.size[1] > 400
    assert main(["--model", model, "--coco", coco, "--out", str(tmp_path / "e"), "--worst", "0"]) == 0
    capsys.readouterr()
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "report.json").write_text('{"mine": 1}')
    msg = _fails(main, ["--model", model, "--coco", coco, "--out", str(tmp_path / "f")], capsys)
    assert msg == (f"{tmp_path / 'f' / 'report.json'} exists and kseg evaluate did not write it: it is left alone; "
                   f"choose another --out")
    msg = _fails(main, ["--model", model, "--out", str(tmp_path / "g")], capsys)
    assert msg == f"{model}: an instance model is scored on COCO instance annotations: give --coco JSON"
    msg = _fails(main, ["--model", model, "--coco", coco, "--flip", "--size", "64"], capsys)
    assert msg == (f"{model}: --size, --flip apply to semantic models; an instance model takes --coco, --images, "
                   f"--score-threshold, --limit, --worst")
    tiny_model().save(tmp_path / "sem.keras")
    msg = _fails(main, ["--model", str(tmp_path / "sem.keras"), "--coco", coco], capsys)
    assert msg == f"{tmp_path / 'sem.keras'}: --coco scores instance models (Mask R-CNN, maskrcnn-coco); this is not one"


class TruthPredictor:
    """Predicts each image's ground truth (non-crowd) with score 1: AP must be 1."""

    def __init__(self, record, class_names):
        self.record, self.class_names = record, class_names
        self.by_path = {str(info["path"]): i for i, info in enumerate(record.images)}

    def predict(self, image):
        from kseg.data.instances import boxes_from_masks
        from kseg.detection.predictor import Instances

        i = next(i for i in range(len(self.record)) if np.array_equal(self.record.load(i)[0], image))
        _, classes, masks, crowd = self.record.load(i)
        classes, masks = classes[~crowd], masks[~crowd]
        return Instances(boxes_from_masks(masks), np.ones(len(classes), np.float32), classes,
                         masks.astype(np.float32), [self.class_names[c] for c in classes])


def test_ground_truth_scores_one(world, tmp_path):
    from kseg.data.instances import read_instances
    from kseg.detection.evaluation import evaluate_instances

    root, _ = world
    coco = root / "data" / "val" / "instances.json"
    record = read_instances(coco)
    report = evaluate_instances(TruthPredictor(record, NAMES), coco, worst=1)
    assert report["mask_ap"] == pytest.approx(1.0) and report["box_ap"] == pytest.approx(1.0)
    assert all(p["f1"] == 1.0 and p["fp"] == p["fn"] == 0 for p in report["per_image"])
    by_index = ["background", "c1", "c2", "c3", "c4", "c5"]  # unnamed classes: matched by index
    assert evaluate_instances(TruthPredictor(record, by_index), coco, worst=0, limit=1)["classes_matched_by"] == \
        "indices"
    with pytest.raises(KsegError, match=r"m\.keras: its 3 classes do not name the 5 categories of .*instances\.json "
                                        r"\(circle, square, triangle, \.\.\.\), and the counts differ"):
        evaluate_instances(TruthPredictor(record, NAMES[:4]), coco, model="m.keras")


def test_image_f1_by_hand():
    from kseg.detection.evaluation import image_f1

    def box(y0, y1, x0, x1):
        m = np.zeros((20, 20), bool)
        m[y0:y1, x0:x1] = True
        return m

    gt = np.stack([box(0, 10, 0, 10), box(10, 20, 10, 20), box(0, 8, 12, 20)])
    gt_classes, crowd = np.array([1, 2, 1]), np.array([False, False, True])
    pred = np.stack([box(0, 10, 1, 10),     # IoU 0.9 with gt 0: right
                     box(0, 10, 0, 10),     # the same object again: wrong
                     box(10, 20, 10, 20),   # gt 1's place but class 1: wrong
                     box(1, 7, 13, 19)])    # inside the crowd region of its class: ignored
    got = image_f1(np.array([1, 1, 1, 1]), pred, gt_classes, gt, crowd)
    assert got == {"f1": pytest.approx(2 / (2 + 2 + 1)), "tp": 1, "fp": 2, "fn": 1}
    assert image_f1(np.zeros(0, int), np.zeros((0, 20, 20), bool), np.zeros(0, int), np.zeros((0, 20, 20), bool),
                    np.zeros(0, bool))["f1"] == 1.0
