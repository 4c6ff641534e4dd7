"""evaluate / predict / export on a user's own data: folder datasets, run.json, binary models, safe outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import tiny_model
from kseg.runinfo import write_run_info

CLASSES = ["sky", "road", "wall"]
COLORS = [[70, 130, 180], [128, 64, 128], [220, 120, 60]]
SIZE = (40, 48)  # the images' own size; the models run at 64x64


def _image(seed, h=SIZE[0], w=SIZE[1]):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def make_folder(root: Path, n: int = 8, binary: bool = False) -> Path:
    """images/imK.png and masks/imK.png (greyscale class ids; multi-class: 255 = unknown, a palette.json)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = SIZE
    for i in range(n):
        Image.fromarray(_image(i)).save(root / "images" / f"im{i}.png")
        if binary:
            m = np.zeros((h, w), np.uint8)
            m[5 + i: 25 + i, 10 + 2 * i: 30 + 2 * i] = 1
        else:
            m = np.full((h, w), 2, np.uint8)
            m[: h // 3 + i] = 0
            m[2 * h // 3:] = 1
            m[0, :4] = 255
        Image.fromarray(m, "L").save(root / "masks" / f"im{i}.png")
    if not binary:
        (root / "palette.json").write_text(json.dumps(dict(zip(CLASSES, COLORS))))
    return root


def reference(data: Path, ids, size=(64, 64)):
    """Independently of kseg's pipeline: images resized bilinearly and rounded, masks by nearest, 255 -> -1."""
    images, truths = [], []
    for ident in ids:
        img = np.asarray(Image.open(data / "images" / f"{ident}.png").convert("RGB"), np.float32)
        images.append(np.clip(np.round(tf.image.resize(img, size).numpy()), 0, 255))
        m = np.asarray(Image.open(data / "masks" / f"{ident}.png")).astype(np.int32)
        m = tf.image.resize(m[..., None], size, method="nearest").numpy()[..., 0]
        truths.append(np.where(m == 255, -1, m))
    return np.stack(images), np.stack(truths)


def confusion(truth, pred, c):
    ok = truth >= 0
    return np.bincount(truth[ok] * c + pred[ok], minlength=c * c).reshape(c, c)


def binary_model(seed=0):
    """The smallest kseg binary model: a U-Net on the plain backbone, one sigmoid channel, 64x64."""
    import keras

    from kseg import models

    keras.utils.set_random_seed(seed)
    return models.build("unet", backbone="plain", num_classes=1, activation="sigmoid", input_shape=(64, 64, 3),
                        backbone_kwargs={"filters": (8, 8, 16, 16, 16)}, decoder_filters=(16, 16, 8, 8))


def errors(capsys):
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("kseg:")]


def exit_error(capsys, fn, argv, notes: int | None = 0) -> str:
    """Run a CLI that must fail: exit status 2 and one error line on stderr, after ``notes`` lines that say
    what was read (None: any number; errors found in the data come after the lines saying where the data
    came from and what kseg.data.folder read in it)."""
    with pytest.raises(SystemExit) as exc:
        fn(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (notes is None or len(err) == notes + 1) and err[-1].startswith("kseg: error: "), err
    assert all(ln.startswith("kseg: ") and not ln.startswith("kseg: error") for ln in err[:-1]), err
    return err[-1]


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A folder dataset of 8 images (3 classes, palette.json) and a run folder: best.keras + run.json."""
    root = tmp_path_factory.mktemp("multi")
    data = make_folder(root / "data")
    run = root / "run"
    run.mkdir()
    model = tiny_model(size=(64, 64), classes=3, seed=3)
    model.save(run / "best.keras")
    ids = [f"im{i}" for i in range(8)]
    val_ids = ["im1", "im4", "im6"]
    write_run_info(run, {"data": str(data), "data_format": "folder", "mask": "folder", "class_names": CLASSES,
                         "colors": COLORS, "binary": False, "threshold": None, "ignore_index": 255,
                         "size": [64, 64], "val_split": 0.2, "seed": 42, "fold": None, "limit": None,
                         "train_ids": [i for i in ids if i not in val_ids], "val_ids": val_ids})
    bare = root / "bare"  # the same model without run.json
    bare.mkdir()
    model.save(bare / "m.keras")
    return {"data": data, "run": run, "model": model, "ids": ids, "val_ids": val_ids, "bare": bare / "m.keras"}


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """A binary folder dataset (0/1 masks), a binary U-Net in a run folder with run.json (threshold 0.45)."""
    from kseg.export import export_saved_model

    root = tmp_path_factory.mktemp("binary")
    data = make_folder(root / "data", binary=True)
    run = root / "run"
    run.mkdir()
    model = binary_model()
    model.save(run / "best.keras")
    ids = [f"im{i}" for i in range(8)]
    val_ids = ["im0", "im3", "im5", "im7"]
    write_run_info(run, {"data": str(data), "data_format": "folder", "mask": "folder",
                         "class_names": ["background", "crack"], "colors": [[0, 0, 0], [0, 255, 0]],
                         "binary": True, "threshold": 0.45, "ignore_index": 255, "size": [64, 64],
                         "val_split": 0.2, "seed": 42, "fold": None, "limit": None,
                         "train_ids": [i for i in ids if i not in val_ids], "val_ids": val_ids})
    sm = export_saved_model(model, run / "saved_model", tflite=False)
    return {"data": data, "run": run, "model": model, "ids": ids, "val_ids": val_ids, "sm": sm}


# --------------------------------------------------------------------------- evaluate


def test_evaluate_folder_data_without_run_json_says_the_split_is_assumed(multi, tmp_path, capsys):
    from kseg import evaluate
    from kseg.data import split_indices

    out = tmp_path / "ev"
    assert evaluate.main(["--model", str(multi["bare"]), "--data-format", "folder", "--data", str(multi["data"]),
                          "--out", str(out), "--worst", "2"]) == 0
    err = errors(capsys)  # (kseg.data.folder may add its own lines about the masks)
    assert (f"kseg: no run.json beside {multi['bare']}: assuming the run's split was --val-split 0.2 "
            f"--seed 42 (no --limit); if training used other values, pass them, or the scores may include "
            f"training images") in err
    assert not any(ln.startswith("kseg: warning:") for ln in err)
    rep = json.loads((out / "report.json").read_text())
    val = [multi["ids"][i] for i in split_indices(8, 0.2, 42)[1]]
    assert [r["id"] for r in rep["per_image"]] == val
    assert rep["class_names"] == CLASSES and rep["data_format"] == "folder" and rep["split_from"] == "assumed"
    images, truths = reference(multi["data"], val)
    preds = multi["model"].predict(images, verbose=0).argmax(-1)
    assert rep["confusion_matrix"] == confusion(truths, preds, 3).tolist()
    assert len(np.unique(preds)) > 1  # a non-trivial prediction, so the comparison means something
    assert (out / "worst.png").stat().st_size > 1000 and (out / "confusion_matrix.png").is_file()


def test_evaluate_reads_images_and_masks_as_folder_data_without_data_format(multi, tmp_path, capsys):
    """The user's first try: --data my_folder (images/ + masks/) without --data-format."""
    from kseg import evaluate

    rep = evaluate.run(evaluate.parse_args(["--model", str(multi["bare"]), "--data", str(multi["data"]),
                                            "--out", str(tmp_path / "ev"), "--worst", "0"]))
    assert errors(capsys)[0] == (f"kseg: {multi['data']} holds images/ and masks/ (not iccv09's labels/): reading "
                                 f"it as --data-format folder")
    assert rep["data_format"] == "folder" and rep["class_names"] == CLASSES


def test_evaluate_scores_exactly_the_runs_validation_images(multi, tmp_path, capsys):
    from kseg import evaluate
    from kseg.data import split_indices

    model = multi["run"] / "best.keras"
    out = tmp_path / "ev"
    assert evaluate.main(["--model", str(model), "--out", str(out)]) == 0
    err = errors(capsys)
    assert err == [f"kseg: from {multi['run'] / 'run.json'}: --data-format folder, --data {multi['data']}, "
                   f"--classes sky,road,wall, the class colours, the split (the run's 3 validation images)"]
    rep = json.loads((out / "report.json").read_text())
    # the run's ids, not what --val-split 0.2 --seed 42 would pick
    assert [r["id"] for r in rep["per_image"]] == multi["val_ids"]
    assert multi["val_ids"] != [multi["ids"][i] for i in split_indices(8, 0.2, 42)[1]]
    assert rep["split_from"] == "run.json val_ids" and rep["training_images_scored"] == 0
    images, truths = reference(multi["data"], multi["val_ids"])
    preds = multi["model"].predict(images, verbose=0).argmax(-1)
    assert rep["confusion_matrix"] == confusion(truths, preds, 3).tolist()


def test_evaluate_warns_when_a_run_validation_image_is_missing(multi, tmp_path, capsys):
    from kseg import evaluate

    run = tmp_path / "run"
    run.mkdir()
    multi["model"].save(run / "best.keras")
    info = json.loads((multi["run"] / "run.json").read_text())
    info["val_ids"] = ["im1", "gone", "im6"]
    info["train_ids"] = [i for i in multi["ids"] if i not in ("im1", "im6")]
    write_run_info(run, info)
    rep = evaluate.run(evaluate.parse_args(["--model", str(run / "best.keras"), "--out", str(tmp_path / "ev"),
                                            "--worst", "0"]))
    assert (f"kseg: warning: 1 of the run's 3 validation images are not in {multi['data']} "
            f"(e.g. gone): scoring the 2 found") in errors(capsys)
    assert [r["id"] for r in rep["per_image"]] == ["im1", "im6"]


def test_evaluate_takes_limit_val_split_and_seed_from_a_run_json_without_ids(multi, tmp_path, capsys):
    """The user's case: a --limit run evaluated without repeating --limit/--val-split/--seed."""
    from kseg import evaluate
    from kseg.data import split_indices

    run = tmp_path / "run"
    run.mkdir()
    multi["model"].save(run / "best.keras")
    write_run_info(run, {"data": str(multi["data"]), "data_format": "folder", "val_split": 0.5, "seed": 3,
                         "limit": 6, "fold": None})
    rep = evaluate.run(evaluate.parse_args(["--model", str(run / "best.keras"), "--out", str(tmp_path / "ev"),
                                            "--worst", "0"]))
    err = errors(capsys)
    assert err[0] == (f"kseg: from {run / 'run.json'}: --data-format folder, --data {multi['data']}, "
                      f"--val-split 0.5, --seed 3, --limit 6")
    assert not any(ln.startswith("kseg: warning:") for ln in err)  # no training ids known: nothing to warn about
    assert [r["id"] for r in rep["per_image"]] == [multi["ids"][i] for i in split_indices(6, 0.5, 3)[1]]
    assert rep["limit"] == 6 and rep["val_split"] == 0.5 and rep["seed"] == 3
    # the run's data moved away: one line naming it and run.json
    info = json.loads((run / "run.json").read_text())
    info["data"] = str(tmp_path / "moved")
    write_run_info(run, info)
    line = exit_error(capsys, evaluate.main, ["--model", str(run / "best.keras"), "--out", str(tmp_path / "ev")])
    assert line == f"kseg: error: {tmp_path / 'moved'}: the run's data (from {run / 'run.json'}) is not there: pass --data"


def test_evaluate_warns_when_the_split_scores_training_images(multi, tmp_path, capsys):
    from kseg import evaluate
    from kseg.data import split_indices

    model = str(multi["run"] / "best.keras")
    rep = evaluate.run(evaluate.parse_args(["--model", model, "--split", "all", "--out", str(tmp_path / "a"),
                                            "--worst", "0"]))
    err = errors(capsys)
    assert err[-1] == ("kseg: warning: 5 of the 8 images scored are training images of this run (run.json "
                       "train_ids): the scores overstate how the model does on new images")
    assert rep["training_images_scored"] == 5 and rep["images"] == 8
    # --val-split given: the user's split wins, run.json still knows which images trained the model
    rep = evaluate.run(evaluate.parse_args(["--model", model, "--val-split", "0.5", "--seed", "1",
                                            "--out", str(tmp_path / "b"), "--worst", "0"]))
    scored = [multi["ids"][i] for i in split_indices(8, 0.5, 1)[1]]
    n = len(set(scored) - set(multi["val_ids"]))
    assert n > 0 and [r["id"] for r in rep["per_image"]] == scored
    err = errors(capsys)
    assert err[0] == (f"kseg: from {multi['run'] / 'run.json'}: --data-format folder, --data {multi['data']}, "
                      f"--classes sky,road,wall, the class colours")
    assert err[-1] == (f"kseg: warning: {n} of the 4 images scored are training images of this run (run.json "
                       f"train_ids): the scores overstate how the model does on new images")


def test_evaluate_binary_model_on_folder_data(binary, tmp_path, capsys):
    from kseg import evaluate

    out = tmp_path / "ev"
    assert evaluate.main(["--model", str(binary["run"] / "best.keras"), "--out", str(out), "--worst", "3"]) == 0
    captured = capsys.readouterr()
    assert (f"kseg: from {binary['run'] / 'run.json'}: --data-format folder, --data {binary['data']}, "
            f"--classes background,crack, the class colours, --threshold 0.45, the split (the run's 4 validation "
            f"images)") in captured.err.splitlines()
    rep = json.loads((out / "report.json").read_text())
    images, truths = reference(binary["data"], binary["val_ids"])
    probs = binary["model"].predict(images, verbose=0)[..., 0]
    preds = (probs >= 0.45).astype(np.int64)
    assert ((probs >= 0.5) != (probs >= 0.45)).any()  # the threshold matters here
    cm = confusion(truths, preds, 2)
    assert rep["confusion_matrix"] == cm.tolist() and rep["binary"] is True and rep["threshold"] == 0.45
    fg_iou = cm[1, 1] / (cm[1, 1] + cm[0, 1] + cm[1, 0])
    fg_dice = 2 * cm[1, 1] / (2 * cm[1, 1] + cm[0, 1] + cm[1, 0])
    assert rep["foreground"] == "crack" and rep["class_names"] == ["background", "crack"]
    assert rep["foreground_iou"] == pytest.approx(fg_iou) and rep["foreground_dice"] == pytest.approx(fg_dice)
    assert (f"foreground (crack): IoU {fg_iou:.4f}   Dice {fg_dice:.4f}   (p >= 0.45)"
            in captured.out.splitlines())
    # the worst images are those with the lowest foreground IoU
    per = {}
    for ident, t, p in zip(binary["val_ids"], truths, preds):
        c = confusion(t, p, 2)
        per[ident] = c[1, 1] / (c[1, 1] + c[0, 1] + c[1, 0])
    assert {r["id"]: r["foreground_iou"] for r in rep["per_image"]} == pytest.approx(per)
    assert rep["worst"] == sorted(per, key=per.get)[:3]
    assert (out / "worst.png").stat().st_size > 1000

    # the SavedModel exported for it scores the same (folded batch norms: equal to float32 rounding)
    rep_sm = evaluate.run(evaluate.parse_args(["--model", str(binary["sm"]), "--out", str(tmp_path / "sm"),
                                               "--worst", "0"]))
    assert rep_sm["model_format"] == "saved_model" and rep_sm["binary"] is True
    assert np.abs(np.array(rep_sm["confusion_matrix"]) - cm).sum() <= 0.002 * cm.sum()
    assert rep_sm["foreground_iou"] == pytest.approx(fg_iou, abs=0.01)


def test_to_labels_reads_a_binary_output():
    from kseg.errors import KsegError
    from kseg.evaluate import to_labels

    p = np.array([[[[0.2], [0.5]], [[0.7], [0.49]]]], np.float32)
    np.testing.assert_array_equal(to_labels(p, 2), [[[0, 1], [1, 0]]])
    np.testing.assert_array_equal(to_labels(p, 2, threshold=0.3), [[[0, 1], [1, 1]]])
    with pytest.raises(KsegError, match="the model is binary \\(one output channel\\) but the labels have 3 classes"):
        to_labels(p, 3)


def test_evaluate_option_errors(multi, binary, tiny_iccv09, tmp_path, capsys):
    from kseg import evaluate

    line = exit_error(capsys, evaluate.main, ["--model", str(multi["bare"]), "--data-format", "folder",
                                              "--out", str(tmp_path)])
    assert line == "kseg: error: --data-format folder needs --data: a folder holding images/ and masks/"
    line = exit_error(capsys, evaluate.main, ["--model", str(multi["bare"]), "--data", str(multi["data"]),
                                              "--data-format", "folder", "--threshold", "0.3", "--out", str(tmp_path)])
    assert line == (f"kseg: error: {multi['bare']}: --threshold is for binary models (one output channel); "
                    f"this one predicts 3 classes")
    line = exit_error(capsys, evaluate.main, ["--model", str(binary["run"] / "best.keras"), "--data-format",
                                              "iccv09", "--data", str(tiny_iccv09), "--out", str(tmp_path)])
    assert line == (f"kseg: error: {binary['run'] / 'best.keras'}: a binary model (one output channel) cannot be "
                    f"scored on iccv09's surfaces labels (3 classes): use --data-format folder")
    line = exit_error(capsys, evaluate.main, ["--model", str(multi["bare"]), "--data", str(tiny_iccv09),
                                              "--classes", "a,b,c", "--out", str(tmp_path)])
    assert line == ("kseg: error: --classes and --ignore-index are for --data-format folder (iccv09's classes are "
                    "fixed by --mask)")
    line = exit_error(capsys, evaluate.main, ["--model", str(multi["bare"]), "--data", str(multi["data"]),
                                              "--data-format", "folder", "--palette", "nope.json",
                                              "--out", str(tmp_path)])
    assert line == "kseg: error: bad --palette 'nope.json': give regions, surfaces, binary or a palette file"


# --------------------------------------------------------------------------- predict


def _class_map(path):
    with Image.open(path) as im:
        return np.asarray(im), im.mode, im.info.get("Software")


def test_predict_with_a_saved_model(multi, tmp_path, capsys):
    from kseg.export import export_saved_model
    from kseg.predict import main

    sm = export_saved_model(multi["model"], tmp_path / "sm", tflite=False)
    Image.fromarray(_image(11, 50, 70)).save(tmp_path / "scene.png")
    assert main(["--model", str(sm), str(tmp_path / "scene.png"), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["--model", str(multi["bare"]), str(tmp_path / "scene.png"), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    assert "kseg: wrote 1 class maps and overlays to" in capsys.readouterr().out
    a, mode, tag = _class_map(tmp_path / "a" / "scene.png")
    b, _, _ = _class_map(tmp_path / "b" / "scene.png")
    assert mode == "P" and a.shape == (50, 70) and tag == "kseg.predict"
    assert len(np.unique(b)) > 1 and np.mean(a == b) > 0.99  # the SavedModel predicts what the .keras does
    line = exit_error(capsys, main, ["--model", str(sm), str(tmp_path / "scene.png"), "--out", str(tmp_path / "c"),
                                     "--flip", "--scales", "1,2"])
    assert line == (f"kseg: error: {sm}: --scales and --flip need a .keras model; a SavedModel serves each image "
                    f"at its own size")
    line = exit_error(capsys, main, ["--model", str(sm), str(tmp_path / "scene.png"), "--out", str(tmp_path / "c"),
                                     "--threshold", "0.3"])
    assert line == (f"kseg: error: {sm}: --threshold is for binary models (one output channel); this one predicts "
                    f"3 classes")
    assert not (tmp_path / "c").exists()


def test_predict_into_the_input_folder_never_replaces_gray_png(multi, tmp_path, capsys):
    """As the user saw it: a greyscale photo gray.png, and --out the folder it is in."""
    from kseg.predict import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_image(5)[..., 0], "L").save(photos / "gray.png")
    before = (photos / "gray.png").read_bytes()
    line = exit_error(capsys, main, ["--model", str(multi["bare"]), str(photos), "--out", str(photos)])
    assert line == (f"kseg: error: {photos / 'gray.png'} is an input image: kseg.predict never writes over its "
                    f"inputs; choose another --out")
    assert (photos / "gray.png").read_bytes() == before
    assert sorted(p.name for p in photos.iterdir()) == ["gray.png"]  # nothing else written either

    # outputs that cannot collide with the inputs may go into the input folder, and a second run replaces them
    Image.fromarray(_image(6)).save(photos / "scene.jpg")
    (photos / "gray.png").unlink()
    assert main(["--model", str(multi["bare"]), str(photos), "--out", str(photos), "--quiet"]) == 0
    assert sorted(p.name for p in photos.iterdir()) == ["scene.jpg", "scene.png", "scene_overlay.png"]
    assert main(["--model", str(multi["bare"]), str(photos), "--out", str(photos), "--quiet"]) == 0
    assert errors(capsys) == [f"kseg: {photos}: left out 2 PNG(s) that kseg.predict wrote (class maps and "
                              f"overlays), e.g. scene.png"]
    assert sorted(p.name for p in photos.iterdir()) == ["scene.jpg", "scene.png", "scene_overlay.png"]


def test_predict_inputs_with_one_stem_do_not_collide(multi, tmp_path, capsys):
    from kseg.predict import Predictor, main

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_image(1)).save(src / "a.jpg", quality=95)
    Image.fromarray(_image(2)).save(src / "a.png")
    Image.fromarray(_image(3)).save(src / "b.png")
    out = tmp_path / "out"
    assert main(["--model", str(multi["bare"]), str(src), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.jpg_overlay.png", "a.png.png",
                                                     "a.png_overlay.png", "b.png", "b_overlay.png"]
    predictor = Predictor(multi["model"])
    from kseg.predict import read_image

    maps = {}
    for name in ("a.jpg", "a.png"):
        maps[name], _, _ = _class_map(out / f"{name}.png")
        np.testing.assert_array_equal(maps[name], predictor(read_image(src / name)).argmax(-1))
    assert (maps["a.jpg"] != maps["a.png"]).any()  # two different pictures: each map is its own image's

    # a name that would still collide is refused before anything is written
    Image.fromarray(_image(4)).save(src / "b_overlay.png")
    line = exit_error(capsys, main, ["--model", str(multi["bare"]), str(src / "b.png"), str(src / "b_overlay.png"),
                                     "--out", str(tmp_path / "out2")])
    assert line == (f"kseg: error: {src / 'b.png'} and {src / 'b_overlay.png'} would both write b_overlay.png: "
                    f"rename one or predict them into separate --out folders")
    assert not (tmp_path / "out2").exists()


def test_predict_never_replaces_a_file_it_did_not_write(multi, tmp_path, capsys):
    from kseg.predict import main

    Image.fromarray(_image(7)).save(tmp_path / "scene.jpg")
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(_image(8)).save(out / "scene.png")  # the user's own file
    before = (out / "scene.png").read_bytes()
    line = exit_error(capsys, main, ["--model", str(multi["bare"]), str(tmp_path / "scene.jpg"), "--out", str(out)])
    assert line == (f"kseg: error: {out / 'scene.png'} exists and kseg.predict did not write it: it is left alone; "
                    f"choose another --out or move the file")
    assert (out / "scene.png").read_bytes() == before and not (out / "scene_overlay.png").exists()
    (out / "scene.png").unlink()
    for _ in range(2):  # kseg.predict's own outputs are replaced by the next run
        assert main(["--model", str(multi["bare"]), str(tmp_path / "scene.jpg"), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scene.png", "scene_overlay.png"]


def test_predict_uses_run_json_colours(multi, tmp_path, capsys):
    from kseg.predict import main

    Image.fromarray(_image(9)).save(tmp_path / "x.png")
    assert main(["--model", str(multi["run"] / "best.keras"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    assert errors(capsys) == [f"kseg: from {multi['run'] / 'run.json'}: 3 classes (sky, road, wall), the class "
                              f"colours"]
    with Image.open(tmp_path / "o" / "x.png") as im:
        assert np.array(im.getpalette()[:9]).reshape(3, 3).tolist() == COLORS


def test_binary_predict_writes_0_255_masks_and_a_foreground_overlay(binary, tmp_path, capsys):
    from kseg.predict import Predictor, main

    img = _image(12, 50, 70)
    Image.fromarray(img).save(tmp_path / "road.png")
    out = tmp_path / "out"
    assert main(["--model", str(binary["run"] / "best.keras"), str(tmp_path / "road.png"), "--out", str(out),
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"kseg: from {binary['run'] / 'run.json'}: 2 classes (background, crack), "
                                         f"--threshold 0.45, the class colours"]
    assert f"kseg: wrote 1 masks (0/255, p >= 0.45) and overlays to {out} in" in captured.out
    mask, mode, tag = _class_map(out / "road.png")
    assert mode == "L" and mask.shape == (50, 70) and tag == "kseg.predict"
    probs = Predictor(binary["model"])(img)[..., 0]
    expected = np.where(probs >= 0.45, 255, 0)
    assert set(np.unique(expected)) == {0, 255}  # both classes appear, so equality means something
    np.testing.assert_array_equal(mask, expected)
    with Image.open(out / "road_overlay.png") as ov:
        overlay = np.asarray(ov).astype(np.float64)
    fg = mask == 255
    np.testing.assert_array_equal(overlay[~fg], img[~fg])  # background untouched
    green = 0.5 * img[fg] + 0.5 * np.array([0, 255, 0])  # run.json's foreground colour at --alpha 0.5
    assert np.abs(overlay[fg] - green).max() <= 1

    # the exported SavedModel of the run: the same mask (folded batch norms: equal to float32 rounding)
    assert main(["--model", str(binary["sm"]), str(tmp_path / "road.png"), "--out", str(tmp_path / "sm"),
                 "--threshold", "0.45", "--quiet"]) == 0
    sm_mask, _, _ = _class_map(tmp_path / "sm" / "road.png")
    assert set(np.unique(sm_mask)) <= {0, 255} and np.mean(sm_mask == mask) > 0.99
    capsys.readouterr()
    line = exit_error(capsys, main, ["--model", str(binary["run"] / "best.keras"), str(tmp_path / "road.png"),
                                     "--out", str(tmp_path / "p"), "--palette", "surfaces"])
    assert line == ("kseg: error: bad --palette 'surfaces': a binary model takes a palette file of two classes "
                    "(background, foreground)")


# --------------------------------------------------------------------------- export


def test_binary_export_signature_and_tflite(binary, tmp_path):
    from kseg.export import TFLITE_NAME, export_saved_model

    model = binary["model"]
    sm = export_saved_model(model, tmp_path / "sm")
    serve = tf.saved_model.load(str(sm)).signatures["serving_default"]
    assert sorted(serve.structured_outputs) == ["mask", "probabilities"]
    images = np.random.default_rng(0).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)
    out = serve(images=tf.constant(images))
    probs, mask = out["probabilities"].numpy(), out["mask"].numpy()
    assert probs.shape == (2, 50, 70, 1) and probs.dtype == np.float32
    assert mask.shape == (2, 50, 70) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, (probs[..., 0] >= 0.5).astype(np.uint8))
    assert set(np.unique(mask)) == {0, 1}
    x = tf.image.resize(tf.cast(images, tf.float32), (64, 64))
    ref = tf.image.resize(model.predict(x, verbose=0), (50, 70)).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-4)

    interp = tf.lite.Interpreter(model_path=str(sm / TFLITE_NAME))
    runner = interp.get_signature_runner("serving_default")
    lite = runner(images=images[:1])
    assert sorted(lite) == ["mask", "probabilities"]
    np.testing.assert_allclose(lite["probabilities"], probs[:1], atol=1e-4)
    assert np.mean(lite["mask"] == mask[:1]) > 0.999


def test_more_user_errors(multi, binary, tmp_path, capsys):
    from kseg import evaluate, predict

    bare, bdata = str(multi["bare"]), binary["data"]
    # a binary model given three class names
    line = exit_error(capsys, evaluate.main, ["--model", str(binary["run"] / "best.keras"), "--data",
                                              str(multi["data"]), "--classes", "sky,road,wall",
                                              "--out", str(tmp_path / "a")])
    assert line == (f"kseg: error: {binary['run'] / 'best.keras'}: a binary model has two classes (background, "
                    f"foreground) but 3 class names were given: sky, road, wall")
    # a 3-class model on two-class masks named by --classes
    line = exit_error(capsys, evaluate.main, ["--model", bare, "--data", str(bdata), "--data-format", "folder",
                                              "--classes", "bg,crack", "--out", str(tmp_path / "b")])
    assert line == (f"kseg: error: {bare}: the model predicts 3 classes but {bdata} has 2 (bg, crack): is this the "
                    f"run's data?")
    line = exit_error(capsys, evaluate.main, ["--model", bare, "--data", str(multi["data"]), "--data-format",
                                              "folder", "--mask", "regions", "--out", str(tmp_path / "c")])
    assert line == ("kseg: error: --mask regions is for iccv09 data: folder data has its own masks (name classes "
                    "with --classes or a palette file)")
    line = exit_error(capsys, evaluate.main, ["--model", bare, "--threshold", "1.5"])
    assert line == "kseg: error: bad --threshold 1.5: give a probability between 0 and 1, e.g. 0.5"
    # run.json's validation ids are none of the data's
    run = tmp_path / "run"
    run.mkdir()
    multi["model"].save(run / "best.keras")
    write_run_info(run, {"data": str(multi["data"]), "data_format": "folder", "val_ids": ["x1", "x2"]})
    line = exit_error(capsys, evaluate.main, ["--model", str(run / "best.keras"), "--out", str(tmp_path / "d")],
                      notes=None)
    assert line == (f"kseg: error: {multi['data']}: none of the run's 2 validation images (run.json val_ids, "
                    f"e.g. x1) is here: pass the run's data with --data")
    # predict: a binary model's palette file must have two classes
    Image.fromarray(_image(1)).save(tmp_path / "x.png")
    line = exit_error(capsys, predict.main, ["--model", str(binary["run"] / "best.keras"), str(tmp_path / "x.png"),
                                             "--out", str(tmp_path / "o"), "--palette",
                                             str(multi["data"] / "palette.json")])
    assert line == (f"kseg: error: {multi['data'] / 'palette.json'}: the palette has 3 classes but the binary model "
                    f"{binary['run'] / 'best.keras'} predicts two (background, foreground)")
    line = exit_error(capsys, predict.main, ["--model", bare, str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                                             "--threshold", "0"])
    assert line == "kseg: error: bad --threshold 0.0: give a probability between 0 and 1, e.g. 0.5"
    assert not (tmp_path / "o").exists()


def test_a_run_without_an_ignore_value_is_evaluated_without_one(tmp_path):
    """run.json "ignore_index": null (trained with --ignore-index none): 255 in a mask is then a class id, not
    unknown, so evaluate must not bring the default ignore value back."""
    from kseg import evaluate

    args = evaluate.parse_args(["--model", str(tmp_path / "best.keras"), "--data-format", "folder",
                                "--data", str(tmp_path)])
    taken = evaluate.resolve(args, {"data_format": "folder", "ignore_index": None, "class_names": ["a", "b"]})
    assert "--ignore-index none" in taken and args.ignore_index == evaluate.NO_IGNORE
    args = evaluate.parse_args(["--model", str(tmp_path / "best.keras"), "--data-format", "folder",
                                "--data", str(tmp_path)])
    evaluate.resolve(args, {"data_format": "folder", "ignore_index": 7})
    assert args.ignore_index == 7


def test_binary_colours_are_one_palette_everywhere():
    from kseg import evaluate, predict, viz

    assert [tuple(c) for c in viz.PALETTES["binary"]] == [tuple(c) for c in evaluate.BINARY_COLORS]
    assert tuple(predict.FOREGROUND) == tuple(viz.PALETTES["binary"][1])


def test_evaluate_reads_ignore_index_and_classes_as_train_does(tmp_path):
    """One parser per option across commands: --ignore-index takes 'none', --classes takes names or a file."""
    from kseg import evaluate

    args = evaluate.parse_args(["--model", str(tmp_path / "best.keras"), "--ignore-index", "none"])
    assert args.ignore_index == evaluate.NO_IGNORE
    with pytest.raises(evaluate.KsegError, match="bad --ignore-index '-3'"):
        evaluate.parse_args(["--model", str(tmp_path / "best.keras"), "--ignore-index", "-3"])
    names = tmp_path / "names.txt"
    names.write_text("road\n\ncrack\n")
    args.classes = str(names)
    assert evaluate._folder_names(args, True, tmp_path / "best.keras") == ["road", "crack"]
    args.classes = "a,a"
    with pytest.raises(evaluate.KsegError, match="appears twice"):
        evaluate._folder_names(args, False, tmp_path / "best.keras")
