"""Post-processing functions and the ``python -m kseg.evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_tiny_iccv09, tiny_deeplab_pair
from kseg import postprocess as pp

# --------------------------------------------------------------------------- post-processing


def test_opening_removes_specks_and_fills_from_neighbours():
    lab = np.zeros((12, 12), np.int64)
    lab[6:, :] = 1
    lab[2, 3] = 2          # a lone pixel of class 2 in class 0
    lab[9, 9] = 0          # a lone pixel of class 0 in class 1
    out = pp.opening(lab, 3)
    assert out[2, 3] == 0 and out[9, 9] == 1
    assert (out[:5] == 0).all() and (out[7:] == 1).all()
    # restricted to class 2, the class-0 speck stays
    out = pp.opening(lab, 3, classes=[2])
    assert out[2, 3] == 0 and out[9, 9] == 0


def test_closing_fills_gaps_of_a_class_and_leaves_unknown_pixels():
    lab = np.ones((9, 9), np.int64)
    lab[4, 4] = 0                      # a one-pixel hole in class 1
    lab[0, 0] = -1                     # unknown stays unknown
    out = pp.closing(lab, 3)
    assert out[4, 4] == 1 and out[0, 0] == -1
    assert pp.closing(lab, 3, classes=[0])[4, 4] == 0


def test_remove_small_regions_per_class():
    lab = np.zeros((20, 20), np.int64)
    lab[2:4, 2:4] = 1        # 4 pixels of class 1
    lab[10:16, 10:16] = 1    # 36 pixels of class 1
    lab[12, 12] = 2          # 1 pixel of class 2 inside it
    out = pp.remove_small_regions(lab, 5)
    assert (out[2:4, 2:4] == 0).all()            # small class-1 region filled by its surroundings
    assert out[12, 12] == 1                       # the class-2 speck filled by class 1
    assert (out[10:16, 10:16] == 1).all()         # big region kept
    out = pp.remove_small_regions(lab, {2: 5})    # only class 2 has a minimum
    assert (out[2:4, 2:4] == 1).all() and out[12, 12] == 1
    out = pp.remove_small_regions(lab, 5, classes=[1])
    assert (out[2:4, 2:4] == 0).all() and out[12, 12] == 2
    # 8-connectivity: a diagonal chain of 5 pixels is one region of 5
    chain = np.zeros((8, 8), np.int64)
    for i in range(5):
        chain[i, i] = 1
    assert (pp.remove_small_regions(chain, 5) == chain).all()
    assert (pp.remove_small_regions(chain, 6) == 0).all()


def test_fill_from_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lab = rng.integers(0, 4, (7, 9))
        holes = rng.random(lab.shape) < 0.4
        if holes.all() or not holes.any():
            continue
        out = pp.fill_from_nearest(lab, holes)
        assert (out[~holes] == lab[~holes]).all()
        src = np.argwhere(~holes)
        for i, j in np.argwhere(holes):
            d = np.sqrt(((src - [i, j]) ** 2).sum(1))
            # OpenCV's 5x5 distance mask approximates Euclidean distance closely
            near = {lab[tuple(s)] for s in src[d <= d.min() * 1.08 + 1e-9]}
            assert out[i, j] in near
    lab = np.arange(4).reshape(2, 2)
    assert (pp.fill_from_nearest(lab, np.ones((2, 2), bool)) == lab).all()


def test_postprocess_pipeline_and_bad_kernel():
    lab = np.zeros((10, 10), np.int64)
    lab[5, 5] = 1
    assert (pp.postprocess(lab) == lab).all()
    assert (pp.postprocess(lab, opening_kernel=3) == 0).all()
    assert (pp.postprocess_batch(np.stack([lab, lab]), min_size=2) == 0).all()
    from kseg.errors import KsegError

    with pytest.raises(KsegError, match="odd"):
        pp.opening(lab, 4)


# --------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny iccv09 folder and an untrained U-Net (resnet18, 64x64) saved as .keras."""
    import keras

    from kseg import models

    root = tmp_path_factory.mktemp("eval")
    data = make_tiny_iccv09(root / "iccv09Data", n=6)
    keras.utils.set_random_seed(1)
    model = models.build("unet", backbone="resnet18", num_classes=3, input_shape=(64, 64, 3))
    path = root / "model.keras"
    model.save(path)
    return {"root": root, "data": data, "model": model, "path": path}


def _truth_and_predictions(setup, predict_batch):
    """Independently: resize each image (bilinear, rounded) and label (nearest) to 64x64, predict, argmax."""
    import tensorflow as tf

    from kseg.data import load_iccv09

    ds = load_iccv09(setup["data"], mask="surfaces")
    # the pipeline keeps resized images as uint8 (rounded), so the reference rounds too
    images = np.stack([np.clip(np.round(tf.image.resize(tf.cast(tf.io.decode_jpeg(tf.io.read_file(p), channels=3),
                                                                tf.float32), (64, 64)).numpy()), 0, 255)
                       for p in ds.image_paths])
    truths = np.stack([tf.image.resize(lab[..., None].astype(np.int32), (64, 64), method="nearest").numpy()[..., 0]
                       for lab in ds.labels])
    return ds.ids, images, truths, predict_batch(images)


def _counts(truth, pred, c=3):
    valid = truth >= 0
    t, p = truth[valid], pred[valid]
    tp = np.array([np.sum((t == k) & (p == k)) for k in range(c)], float)
    fp = np.array([np.sum((t != k) & (p == k)) for k in range(c)], float)
    fn = np.array([np.sum((t == k) & (p != k)) for k in range(c)], float)
    return tp, fp, fn, t.size


def _check_report(rep, truth, pred, names=("sky", "horizontal", "vertical")):
    tp, fp, fn, n = _counts(truth, pred)
    present = tp + fp + fn > 0
    assert rep["pixels"] == n
    assert rep["pixel_accuracy"] == pytest.approx(tp.sum() / n)
    iou = np.where(present, tp / np.maximum(tp + fp + fn, 1), np.nan)
    assert rep["miou"] == pytest.approx(np.nanmean(iou))
    for k, name in enumerate(names):
        if present[k]:
            assert rep["iou"][name] == pytest.approx(iou[k])
            assert rep["dice"][name] == pytest.approx(2 * tp[k] / (2 * tp[k] + fp[k] + fn[k]))
            assert rep["precision"][name] == pytest.approx(tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else 0.0)
            assert rep["recall"][name] == pytest.approx(tp[k] / (tp[k] + fn[k]) if tp[k] + fn[k] else 0.0)
        else:
            assert rep["iou"][name] is None and name in rep["absent"]
    truth_px = tp + fn
    assert rep["fw_iou"] == pytest.approx(np.sum(truth_px * np.nan_to_num(iou)) / n)
    assert rep["mean_accuracy"] == pytest.approx(np.mean([tp[k] / truth_px[k] for k in range(3) if truth_px[k]]))


def _image_miou(truth, pred):
    tp, fp, fn, _ = _counts(truth, pred)
    union = tp + fp + fn
    return float(np.mean(tp[union > 0] / union[union > 0]))


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_evaluate_cli_report_matches_numpy(setup, tmp_path, capsys):
    from kseg import evaluate

    out = tmp_path / "out"
    rc = evaluate.main(["--model", str(setup["path"]), "--data", str(setup["data"]), "--split", "all",
                        "--batch-size", "4", "--out", str(out), "--worst", "3",
                        "--min-region", "40", "--open", "3"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    ids, _, truths, preds = _truth_and_predictions(
        setup, lambda x: np.argmax(setup["model"].predict(x, verbose=0), -1))
    assert rep["images"] == 6 and rep["size"] == [64, 64]
    _check_report(rep, truths, preds)
    # the confusion matrix counts every valid pixel once
    cm = np.array(rep["confusion_matrix"])
    assert cm.sum() == np.sum(truths >= 0)
    assert np.allclose(np.array(rep["confusion_matrix_normalized"]).sum(1)[cm.sum(1) > 0], 1.0)
    # per image, and the worst images are the lowest mIoU ones, lowest first
    per = {r["id"]: r["miou"] for r in rep["per_image"]}
    for i, ident in enumerate(ids):
        assert per[ident] == pytest.approx(_image_miou(truths[i], preds[i]))
    assert rep["worst"] == sorted(per, key=per.get)[:3]
    # post-processing: the same options applied independently, and the change reported
    post = np.stack([pp.remove_small_regions(pp.opening(p, 3), 40) for p in preds])
    assert rep["postprocess"]["options"] == {"opening_kernel": 3, "closing_kernel": 0, "min_size": 40,
                                             "classes": None}
    _check_report(rep["postprocess"]["scores"], truths, post)
    ch = rep["postprocess"]["change"]
    assert ch["miou"] == pytest.approx(rep["postprocess"]["scores"]["miou"] - rep["miou"])
    assert ch["pixel_accuracy"] == pytest.approx(rep["postprocess"]["scores"]["pixel_accuracy"]
                                                 - rep["pixel_accuracy"])
    assert (post != preds).any()  # post-processing changed something, so the comparison means something
    for name in ("report.json", "confusion_matrix.png", "confusion_matrix_postprocessed.png", "worst.png"):
        assert (out / name).exists()
    for name in ("confusion_matrix.png", "worst.png"):
        assert _is_png(out / name)
    text = capsys.readouterr().out
    for word in ("sky", "horizontal", "vertical", "IoU", "pixel accuracy", "post-processed"):
        assert word in text
    assert f"{rep['miou']:.4f}" in text


def test_evaluate_saved_model_folders(setup, tmp_path):
    """kseg's export (uint8 images in) and a plain float32 SavedModel give the .keras numbers."""
    import tensorflow as tf

    from kseg import evaluate
    from kseg.errors import KsegError
    from kseg.export import export_saved_model

    model = setup["model"]
    ids, images, truths, preds = _truth_and_predictions(setup, lambda x: np.argmax(model.predict(x, verbose=0), -1))

    class Float32Serving(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32)])
        def serve(self, x):
            return {"output_0": self.m(x, training=False)}

    plain = tmp_path / "float32_sm"
    module = Float32Serving(model)
    tf.saved_model.save(module, str(plain), signatures={"serving_default": module.serve})
    rep = evaluate.run(evaluate.parse_args(["--model", str(plain), "--data", str(setup["data"]), "--split", "all",
                                            "--out", str(tmp_path / "a"), "--worst", "0"]))
    assert rep["model_format"] == "saved_model" and rep["size"] == [64, 64]  # size from the signature
    _check_report(rep, truths, preds)
    with pytest.raises(KsegError, match="float32_sm: --output-stride needs a .keras model, not a SavedModel"):
        evaluate.run(evaluate.parse_args(["--model", str(plain), "--data", str(setup["data"]), "--output-stride", "8",
                                          "--out", str(tmp_path / "c")]))

    exported = export_saved_model(model, tmp_path / "kseg_sm", tflite=False)
    rep = evaluate.run(evaluate.parse_args(["--model", str(exported), "--data", str(setup["data"]), "--split", "all",
                                            "--size", "64", "--out", str(tmp_path / "b"), "--worst", "0"]))
    # uint8 input: the resized images are rounded, so compare with predictions on rounded images
    rounded = np.argmax(model.predict(np.rint(np.clip(images, 0, 255)), verbose=0), -1)
    _check_report(rep, truths, rounded)


def test_postprocess_spec_as_predict_takes_it():
    from kseg import evaluate

    args = evaluate.parse_args(["--model", "m.keras", "--postprocess", "open:5,min-area:30"])
    opts = evaluate.postprocess_options(args, ["sky", "horizontal", "vertical"])
    assert opts == {"opening_kernel": 5, "closing_kernel": 0, "min_size": 30, "classes": None}
    args = evaluate.parse_args(["--model", "m.keras", "--min-region", "sky=20,2=7", "--pp-classes", "vertical"])
    opts = evaluate.postprocess_options(args, ["sky", "horizontal", "vertical"])
    assert opts["min_size"] == {0: 20, 2: 7} and opts["classes"] == [2]
    assert evaluate.postprocess_options(evaluate.parse_args(["--model", "m"]), ["a", "b"]) is None


def test_evaluate_val_split_matches_training_split(setup, tmp_path):
    from kseg import evaluate
    from kseg.data import load_iccv09, split_indices

    rep = evaluate.run(evaluate.parse_args(["--model", str(setup["path"]), "--data", str(setup["data"]),
                                            "--val-split", "0.5", "--seed", "3", "--out", str(tmp_path)]))
    ds = load_iccv09(setup["data"], mask="surfaces")
    _, val = split_indices(len(ds), 0.5, 3)
    assert [r["id"] for r in rep["per_image"]] == [ds.ids[i] for i in val]
    assert rep["postprocess"] is None and rep["split"] == "val"


@pytest.mark.parametrize("extra, message", [
    (["--mask", "regions"], "predicts 3 classes"),
    (["--open", "4"], "odd kernel"),
    (["--pp-classes", "sky"], "needs --open"),
    (["--min-region", "cloud=20"], "cloud"),
    (["--min-region", "-3"], "positive number"),
    (["--batch-size", "0"], "batch-size"),
    (["--postprocess", "blur:3"], "bad --postprocess step"),
    (["--postprocess", "open:4"], "odd kernel"),
    (["--size", "50"], "multiple of 32"),
    (["--output-stride", "16"], "cannot change the output stride of 'unet_resnet18'"),
])
def test_evaluate_user_errors(setup, tmp_path, capsys, extra, message):
    from kseg import evaluate

    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--model", str(setup["path"]), "--data", str(setup["data"]), "--out", str(tmp_path)] + extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kseg: error:") and message in err[0]


def test_evaluate_at_another_output_stride(setup, tmp_path, capsys):
    """--output-stride 8 scores a stride-16 DeepLabV3+ with the model built at 8 (same weights)."""
    from kseg import evaluate

    m16, m8 = tiny_deeplab_pair(seed=2)
    path = tmp_path / "deeplab.keras"
    m16.save(path)
    out = tmp_path / "out"
    rc = evaluate.main(["--model", str(path), "--data", str(setup["data"]), "--split", "all", "--output-stride", "8",
                        "--out", str(out), "--worst", "0"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["output_stride"] == 8 and "output stride 8" in capsys.readouterr().out
    _, _, truths, preds = _truth_and_predictions(setup, lambda x: np.argmax(m8.predict(x, verbose=0), -1))
    _check_report(rep, truths, preds)
    _, _, _, preds16 = _truth_and_predictions(setup, lambda x: np.argmax(m16.predict(x, verbose=0), -1))
    assert (preds16 != preds).any()  # the two strides predict differently: the check can tell them apart


def test_evaluate_missing_model(tmp_path, capsys):
    from kseg import evaluate

    for bad in (tmp_path / "nope.keras", tmp_path):
        with pytest.raises(SystemExit) as exc:
            evaluate.main(["--model", str(bad)])
        assert exc.value.code == 2
        assert capsys.readouterr().err.startswith("kseg: error:")


@pytest.mark.e2e
def test_evaluate_on_real_images_with_absent_classes(real_iccv09, tmp_path):
    """Real iccv09 images, 8 region classes (a few images rarely hold all 8): report vs NumPy."""
    import keras
    import tensorflow as tf

    from kseg import evaluate, models
    from kseg.data import CLASS_NAMES, load_iccv09

    keras.utils.set_random_seed(2)
    model = models.build("unet", backbone="resnet18", num_classes=8, input_shape=(64, 64, 3))
    model.save(tmp_path / "m.keras")
    rep = evaluate.run(evaluate.parse_args(["--model", str(tmp_path / "m.keras"), "--data", str(real_iccv09),
                                            "--mask", "regions", "--split", "all", "--limit", "6",
                                            "--out", str(tmp_path / "out")]))
    ds = load_iccv09(real_iccv09, mask="regions", limit=6)
    # the pipeline keeps resized images as uint8 (rounded), so the reference rounds too
    images = np.stack([np.clip(np.round(tf.image.resize(tf.cast(tf.io.decode_jpeg(tf.io.read_file(p), channels=3),
                                                                tf.float32), (64, 64)).numpy()), 0, 255)
                       for p in ds.image_paths])
    truths = np.stack([tf.image.resize(lab[..., None].astype(np.int32), (64, 64), method="nearest").numpy()[..., 0]
                       for lab in ds.labels])
    preds = np.argmax(model.predict(images, verbose=0), -1)
    names = CLASS_NAMES["regions"]
    valid = truths >= 0
    n = valid.sum()
    assert rep["pixels"] == n and rep["pixel_accuracy"] == pytest.approx(np.mean(truths[valid] == preds[valid]))
    ious = []
    for k, name in enumerate(names):
        t, p = (truths == k) & valid, (preds == k) & valid
        if (t | p).any():
            ious.append((t & p).sum() / (t | p).sum())
            assert rep["iou"][name] == pytest.approx(ious[-1])
        else:
            assert rep["iou"][name] is None and name in rep["absent"]
    assert rep["miou"] == pytest.approx(np.mean(ious))
