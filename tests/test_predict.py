"""Prediction: class-map PNGs and overlays at the input's size, test-time augmentation, post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import tiny_deeplab_pair, tiny_model
from kseg import viz
from kseg.predict import Predictor, flexible, list_images, main, parse_scales, postprocessor




def write_image(path, h, w, seed=0):
    """A smooth random picture (so resizing is meaningful) saved as PNG (lossless)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    Image.fromarray(img).save(path)
    return img


def expected_probs(model, img, size):
    h, w = img.shape[:2]
    x = tf.image.resize(tf.cast(img[None], tf.float32), size, method="bilinear")
    p = model.predict(x, verbose=0)
    return tf.image.resize(p, (h, w), method="bilinear").numpy()[0]


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    model = tiny_model()
    model.save(d / "m.keras")
    return model, d / "m.keras"


def test_cli_overlay_and_class_map_at_input_size(saved_tiny, tmp_path, capsys):
    model, path = saved_tiny
    img = write_image(tmp_path / "scene.png", 50, 70)
    out = tmp_path / "out"
    assert main(["--model", str(path), str(tmp_path / "scene.png"), "--out", str(out)]) == 0
    assert "wrote 1 class maps" in capsys.readouterr().out

    expected = expected_probs(model, img, (64, 64)).argmax(-1)
    assert len(np.unique(expected)) > 1  # a non-trivial map, so equality means something

    with Image.open(out / "scene_overlay.png") as ov:
        assert ov.size == (70, 50) and ov.mode == "RGB"
        overlay = np.asarray(ov)
    with Image.open(out / "scene.png") as cm:
        assert cm.size == (70, 50) and cm.mode == "P"
        class_map = np.asarray(cm)
        pal = np.array(cm.getpalette()[:9], np.uint8).reshape(3, 3)
    np.testing.assert_array_equal(class_map, expected)
    np.testing.assert_array_equal(pal, viz.palette(3, "surfaces")[:3])  # 3 classes: the surfaces colours
    np.testing.assert_array_equal(overlay, viz.overlay(img, expected, 3, "surfaces"))


def test_folder_input_and_duplicates(saved_tiny, tmp_path):
    _, path = saved_tiny
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", 40, 33, seed=1)
    write_image(src / "b.jpg", 64, 64, seed=2)
    (src / "notes.txt").write_text("not an image")
    paths = list_images([src, src / "a.png"])
    assert [p.name for p in paths] == ["a.png", "b.jpg"]  # each once, text skipped
    main(["--model", str(path), str(src), "--out", str(tmp_path / "o"), "--quiet"])
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    with Image.open(tmp_path / "o" / "a.png") as im:
        assert im.size == (33, 40)


def test_flip_tta_is_mirror_symmetric():
    model = tiny_model(size=None, seed=1)
    img = np.random.default_rng(3).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    pred = Predictor(model, flip=True, scales=(0.75, 1.0))
    a = pred(img)
    b = pred(img[:, ::-1])
    np.testing.assert_allclose(b[:, ::-1], a, atol=1e-5)
    plain = Predictor(model)
    assert not np.allclose(plain(img[:, ::-1])[:, ::-1], plain(img), atol=1e-3)  # the model itself is not


@pytest.mark.parametrize("merge", ["mean", "max"])
def test_multiscale_merge(merge):
    model = tiny_model(size=None, seed=2)
    img = np.random.default_rng(4).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    got = Predictor(model, scales=(0.5, 1.0, 2.0), merge=merge)(img)
    # base size: 64x64 (50, 70 rounded to 32); scales → 32x32, 64x64, 128x128
    maps = [expected_probs(model, img, s) for s in ((32, 32), (64, 64), (128, 128))]
    want = np.mean(maps, 0) if merge == "mean" else np.max(maps, 0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.shape == (50, 70, 3)


def test_fixed_size_model_runs_at_other_scales(saved_tiny):
    model, _ = saved_tiny
    flex = flexible(model)
    x = np.random.default_rng(5).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(flex.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    img = x[0].astype(np.uint8)
    got = Predictor(model, scales=(0.5, 1.5))(img)
    want = np.mean([expected_probs(flex, img, s) for s in ((32, 32), (96, 96))], 0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_postprocess_option_removes_specks(saved_tiny, tmp_path):
    pytest.importorskip("kseg.postprocess")
    lab = np.zeros((40, 40), np.int64)
    lab[10:12, 10:12] = 1  # a 4-pixel speck
    lab[20:, :] = 2
    post = postprocessor("min-area:10")
    out = post(lab, 3)
    assert (out[10:12, 10:12] == 0).all() and (out[20:] == 2).all()
    from kseg import postprocess

    _, path = saved_tiny
    write_image(tmp_path / "x.png", 64, 64, seed=7)
    common = ["--model", str(path), str(tmp_path / "x.png"), "--quiet"]
    main([*common, "--out", str(tmp_path / "raw")])
    main([*common, "--out", str(tmp_path / "post"), "--postprocess", "open:3,min-area:40"])
    with Image.open(tmp_path / "raw" / "x.png") as a, Image.open(tmp_path / "post" / "x.png") as b:
        raw, cleaned = np.asarray(a), np.asarray(b)
    want = postprocess.remove_small_regions(postprocess.opening(raw, 3), 40)
    np.testing.assert_array_equal(cleaned, want)
    assert (cleaned != raw).any()  # the option changed something


def test_palette_file(saved_tiny, tmp_path):
    _, path = saved_tiny
    (tmp_path / "pal.txt").write_text("road 255 0 0\ncar 0 255 0\nsky #0000ff\n")
    img = write_image(tmp_path / "x.png", 32, 32, seed=8)
    main(["--model", str(path), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--quiet",
          "--palette", str(tmp_path / "pal.txt"), "--alpha", "1"])
    with Image.open(tmp_path / "o" / "x.png") as cm, Image.open(tmp_path / "o" / "x_overlay.png") as ov:
        ids, colours = np.asarray(cm), np.asarray(ov)
    table = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(colours, table[ids])
    assert img.shape == colours.shape


def test_cli_at_another_output_stride(tmp_path):
    """--output-stride 8 predicts with the stride-16 DeepLabV3+'s weights in the model built at 8."""
    m16, m8 = tiny_deeplab_pair(seed=3)
    m16.save(tmp_path / "d.keras")
    img = write_image(tmp_path / "scene.png", 64, 64)
    assert main(["--model", str(tmp_path / "d.keras"), str(tmp_path / "scene.png"), "--out", str(tmp_path / "o"),
                 "--output-stride", "8", "--quiet"]) == 0
    with Image.open(tmp_path / "o" / "scene.png") as cm:
        got = np.asarray(cm)
    want, before = (expected_probs(m, img, (64, 64)).argmax(-1) for m in (m8, m16))
    assert (want != before).any()  # the strides differ on this image, so equality means something
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("args, message", [
    (["nope.png"], "nope.png: no such file or folder"),
    (["IMG", "--scales", "1,x"], "bad --scales"),
    (["IMG", "--scales", "0,1"], "bad --scales"),
    (["IMG", "--postprocess", "blur:3"], "bad --postprocess step"),
    (["IMG", "--postprocess", "open:4"], "odd"),
    (["IMG", "--palette", "rainbow"], "bad --palette"),
    (["IMG", "--size", "50"], "not a multiple of 32"),
])
def test_cli_errors(saved_tiny, tmp_path, capsys, args, message):
    _, path = saved_tiny
    write_image(tmp_path / "img.png", 32, 32)
    args = [str(tmp_path / "img.png") if a == "IMG" else a for a in args]
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(path), "--out", str(tmp_path / "o"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kseg: error:") and message in err and err.count("\n") == 1


def test_parse_scales():
    assert parse_scales("0.5,0.75,1,1.5,2") == (0.5, 0.75, 1.0, 1.5, 2.0)
    assert parse_scales([1, 2]) == (1.0, 2.0)


@pytest.mark.e2e
def test_predict_real_image_with_unet(real_iccv09, tmp_path):
    """A kseg U-Net on a real iccv09 photo: outputs at the photo's own size, class map = model argmax."""
    from kseg import models

    model = models.build("unet", backbone="resnet18", num_classes=3, input_shape=(64, 64, 3))
    model.save(tmp_path / "u.keras")
    photo = sorted((real_iccv09 / "images").glob("*.jpg"))[0]
    main(["--model", str(tmp_path / "u.keras"), str(photo), "--out", str(tmp_path / "o"), "--quiet"])
    img = tf.io.decode_jpeg(tf.io.read_file(str(photo)), channels=3).numpy()
    with Image.open(tmp_path / "o" / f"{photo.stem}_overlay.png") as ov:
        assert ov.size == (img.shape[1], img.shape[0])
    with Image.open(tmp_path / "o" / f"{photo.stem}.png") as cm:
        np.testing.assert_array_equal(np.asarray(cm), expected_probs(model, img, (64, 64)).argmax(-1))


def test_a_run_that_names_its_classes_gets_a_legend_below_the_overlay(saved_tiny, tmp_path, capsys):
    import json
    import shutil

    model, path = saved_tiny
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "best.keras")
    (run / "run.json").write_text(json.dumps({"class_names": ["sky", "tree", "road"]}))
    img = write_image(tmp_path / "scene.png", 50, 70)
    assert main(["--model", str(run / "best.keras"), str(tmp_path / "scene.png"), "--out", str(tmp_path / "o")]) == 0
    assert "3 classes (sky, tree, road)" in capsys.readouterr().err
    expected = expected_probs(model, img, (64, 64)).argmax(-1)
    with Image.open(tmp_path / "o" / "scene_overlay.png") as ov:
        overlay = np.asarray(ov)
    assert overlay.shape[0] > 50 and overlay.shape[1] == 70  # the legend strip below the photo
    np.testing.assert_array_equal(overlay[:50], viz.overlay(img, expected, 3, "surfaces"))
    (run / "run.json").write_text(json.dumps({"class_names": ["sky", "tree"]}))  # not this model's classes
    assert main(["--model", str(run / "best.keras"), str(tmp_path / "scene.png"), "--out", str(tmp_path / "o2")]) == 0
    with Image.open(tmp_path / "o2" / "scene_overlay.png") as ov:
        assert ov.size == (70, 50)
