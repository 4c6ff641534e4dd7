"""ONNX, OpenVINO and LiteRT exports (kseg.serving.export_model, kseg.runtimes): the Keras model's outputs on
real photos and odd sizes, int8 quantization, kseg predict/evaluate/load_model on them, and every error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model

from kseg.errors import KsegError

# the package each format needs to run (LiteRT falls back on TensorFlow's own interpreter)
RUNNERS = {"onnx": "onnxruntime", "openvino": "openvino", "litert": None}
CONVERTERS = {"onnx": "tf2onnx", "openvino": "openvino", "litert": None}
# Float32 exports differ from Keras by rounding only (another op order, batch norms folded into the convolutions):
# probabilities within PROB_TOL; a pixel's class may differ only where Keras's two best probabilities are within
# TIE of each other (the rounding decides a near-tie), and such pixels are rare (TIE_FRACTION).
PROB_TOL = 1e-4
TIE = 2 * PROB_TOL
TIE_FRACTION = 1e-3


def needs(fmt: str, int8: bool = False) -> None:
    """Skip (with the reason) when the converter or runtime of ``fmt`` is not installed."""
    for module in {RUNNERS[fmt], CONVERTERS[fmt], "nncf" if int8 and fmt == "openvino" else None} - {None}:
        pytest.importorskip(module, reason=f"{module} is not installed (pip install 'kseg[{fmt}]')")


def small_unet(classes=3, activation="softmax", seed=0):
    """A small U-Net (plain encoder with batch norms, 64x64 input, random weights)."""
    import keras

    from kseg import models

    keras.utils.set_random_seed(seed)
    return models.build("unet", backbone="plain", num_classes=classes, input_shape=(64, 64, 3), activation=activation,
                        backbone_kwargs={"filters": (8, 8, 16, 16, 16)}, decoder_filters=(16, 16, 8, 8))


@pytest.fixture(scope="module")
def unet():
    return small_unet()


@pytest.fixture(scope="module")
def exports(unet, tmp_path_factory):
    """``{format: path}`` of ``unet`` exported in each installed format (float32)."""
    from kseg.serving import export_model

    out = tmp_path_factory.mktemp("exports")
    paths = {}
    for fmt in ("onnx", "openvino", "litert"):
        if all(_installed(m) for m in (RUNNERS[fmt], CONVERTERS[fmt]) if m):
            paths[fmt] = export_model(unet, out / "unet", fmt)
    return paths


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def photos(real_iccv09):
    from kseg.inference import read_image

    return [read_image(p) for p in sorted((real_iccv09 / "images").glob("*.jpg"))[:6]]


def assert_same_as_keras(out, ref):
    """Probabilities within PROB_TOL; class maps equal but at rare near-ties of Keras's probabilities."""
    assert out["probabilities"].shape == ref["probabilities"].shape
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=PROB_TOL, rtol=0)
    key = "mask" if "mask" in ref else "class_map"
    differ = out[key] != ref[key]
    if differ.any():
        p = np.sort(ref["probabilities"][differ], axis=-1)
        gap = p[:, -1] - p[:, -2] if p.shape[-1] > 1 else np.abs(p[:, 0] - 0.5)
        assert gap.max() < TIE and differ.mean() <= TIE_FRACTION, (gap.max(), differ.mean())


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_export_matches_keras_on_real_photos(fmt, unet, exports, photos):
    needs(fmt)
    from kseg.runtimes import KerasRuntime, load_runtime

    rt, ref = load_runtime(exports[fmt]), KerasRuntime(unet)
    assert rt.runtime == fmt and rt.num_classes == 3 and not rt.binary
    assert rt.outputs == ("class_map", "probabilities")
    for photo in photos:  # each at its own size (iccv09's are about 320x240, the model takes 64x64)
        out = rt.predict(photo)
        assert out["class_map"].shape == photo.shape[:2] and out["class_map"].dtype == np.int32
        assert_same_as_keras({k: v[None] for k, v in out.items()}, ref(photo[None]))


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_export_takes_any_size_and_batch(fmt, unet, exports):
    needs(fmt)
    from kseg.runtimes import KerasRuntime, load_runtime

    rt, ref = load_runtime(exports[fmt]), KerasRuntime(unet)
    rng = np.random.default_rng(1)
    for shape in [(1, 33, 97, 3), (3, 64, 64, 3), (2, 211, 45, 3)]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        assert_same_as_keras(rt(x), ref(x))


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "litert"])
def test_binary_export_returns_probabilities_and_mask(fmt, tmp_path, photos):
    needs(fmt)
    from kseg.runtimes import KerasRuntime, load_runtime
    from kseg.serving import export_model

    model = small_unet(classes=1, activation="sigmoid", seed=3)
    rt = load_runtime(export_model(model, tmp_path / "binary", fmt))
    assert rt.binary and rt.num_classes == 1 and rt.outputs == ("mask", "probabilities")
    x = photos[0][None]
    out, ref = rt(x), KerasRuntime(model)(x)
    assert out["mask"].dtype == np.uint8 and set(np.unique(out["mask"])) <= {0, 1}
    assert_same_as_keras(out, ref)


@pytest.mark.parametrize("fmt", ["openvino", "litert"])
def test_int8_export_is_quantized_and_close_to_float32(fmt, tmp_path, real_iccv09, photos):
    needs(fmt, int8=True)
    from kseg.quantization import calibration_images
    from kseg.runtimes import KerasRuntime, load_runtime
    from kseg.serving import export_model

    model = tiny_model(size=(64, 64), seed=2)
    calibration = calibration_images(real_iccv09, count=8)
    assert len(calibration) == 8 and calibration[0].dtype == np.uint8 and calibration[0].shape[0] == 1
    f32 = export_model(model, tmp_path / "f32", fmt)
    i8 = export_model(model, tmp_path / "i8", fmt, int8=True, calibration=calibration)
    assert i8.stat().st_size < f32.stat().st_size or fmt == "openvino"  # LiteRT stores int8 weights
    ref, rt = KerasRuntime(model), load_runtime(i8)
    if fmt == "openvino":  # NNCF put int8 FakeQuantize ops in
        assert "FakeQuantize" in i8.read_text()
    agree = [np.mean(rt.predict(p)["class_map"] == ref(p[None])["class_map"][0]) for p in photos]
    err = max(np.abs(rt.predict(p)["probabilities"] - ref(p[None])["probabilities"][0]).max() for p in photos)
    assert min(agree) > 0.9 and err < 0.2, (agree, err)


def test_calibration_images_takes_a_random_subset_and_checks_the_count(real_iccv09):
    from kseg.quantization import calibration_images

    imgs = calibration_images([real_iccv09 / "images"], count=3, seed=1)
    assert len(imgs) == 3 and all(x.ndim == 4 and x.shape[-1] == 3 for x in imgs)
    with pytest.raises(KsegError, match="bad --calibration-count 0"):
        calibration_images(real_iccv09, count=0)


def test_load_model_predict_and_evaluate_read_exported_files(unet, exports, photos, tmp_path):
    import kseg
    from kseg import predict
    from kseg.inference import Predictor, load_predictor
    from kseg.prediction import predict_files
    from kseg.runtimes import Runtime

    fmt = next(iter(exports), None)
    if fmt is None:
        pytest.skip("none of onnxruntime, openvino, LiteRT's converter is installed")
    served = kseg.load_model(exports[fmt])
    assert isinstance(served, Runtime) and served.predict(photos[0])["class_map"].shape == photos[0].shape[:2]
    batch_predict, info = load_predictor(exports[fmt])
    assert info == {"format": fmt, "input_size": None, "num_classes": 3}
    assert batch_predict(photos[0][None].astype(np.float32)).shape == (1, *photos[0].shape[:2], 3)
    import cv2

    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), photos[0][..., ::-1])
    assert predict.main([str(image), "--model", str(exports[fmt]), "--out", str(tmp_path / "rt"), "--quiet"]) == 0
    predict_files(unet, [image], tmp_path / "keras", Predictor(unet), progress=False)
    from PIL import Image

    got, want = (np.asarray(Image.open(tmp_path / d / "photo.png")) for d in ("rt", "keras"))
    assert got.shape == want.shape and np.mean(got == want) > 1 - TIE_FRACTION


def test_export_command_writes_each_format_and_refuses_bad_options(tmp_path, capsys):
    from kseg import export

    model = tiny_model(seed=6)
    model.save(tmp_path / "m.keras")
    m = str(tmp_path / "m.keras")
    formats = [f for f in ("onnx", "openvino", "litert") if not CONVERTERS[f] or _installed(CONVERTERS[f])]
    for fmt in formats:
        assert export.main(["--model", m, "--out", str(tmp_path / "model"), "--format", fmt]) == 0
        suffix = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}[fmt]
        assert (tmp_path / f"model{suffix}").is_file()
        assert f"wrote {fmt} model {tmp_path / f'model{suffix}'}" in capsys.readouterr().out
    if "openvino" in formats:
        assert (tmp_path / "model.bin").is_file()
    bad = [(["--format", "onnx", "--int8", "--calibration", "x"], "--int8 is for --format openvino or litert, not onnx"),
           (["--format", "litert", "--int8"], "--int8 needs calibration images: give --calibration"),
           (["--format", "litert", "--calibration", "x"], "--calibration is for --int8"),
           (["--format", "onnx", "--no-tflite"], "--no-tflite is for --format saved_model"),
           (["--format", "onnx", "--out", str(tmp_path / "m.txt")], "m.txt: --format onnx writes a .onnx file")]
    for extra, message in bad:
        args = ["--model", m] + (["--out", str(tmp_path / "o")] if "--out" not in extra else []) + extra
        with pytest.raises(SystemExit) as exc:
            export.main(args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("kseg: error:") and message in err, err
        assert len(err.strip().splitlines()) == 1


def test_runtime_errors_name_the_file_and_the_fix(tmp_path, monkeypatch, capsys):
    from kseg import predict
    from kseg.runtimes import check_runtime, load_runtime, runtime_of

    for name, runtime in [("a.onnx", "onnx"), ("a.XML", "openvino"), ("a.tflite", "litert"), ("a.keras", "keras")]:
        assert runtime_of(tmp_path / name) == runtime
    with pytest.raises(KsegError, match=r"a\.pt: cannot tell its runtime from the name"):
        runtime_of(tmp_path / "a.pt")
    with pytest.raises(KsegError, match=r"a\.tflite: --runtime onnx runs \.onnx, and this is a litert model"):
        check_runtime(tmp_path / "a.tflite", "onnx")
    with pytest.raises(KsegError, match="missing.onnx: no such model file"):
        load_runtime(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(KsegError, match="junk.onnx: onnxruntime cannot load it|needs the Python package onnxruntime"):
        load_runtime(tmp_path / "junk.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(KsegError, match=r"--runtime onnx needs the Python package onnxruntime: pip install 'kseg\[onnx\]'"):
        load_runtime(tmp_path / "junk.onnx")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    from kseg.serving import export_model

    with pytest.raises(KsegError, match=r"--format onnx needs the Python package tf2onnx: pip install 'kseg\[onnx\]'"):
        export_model(tiny_model(), tmp_path / "m", "onnx")
    monkeypatch.undo()
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    for extra, message in [(["--scales", "0.5,1"], "junk.onnx: --scales needs a .keras model; an ONNX model serves"),
                           (["--runtime", "litert"], "junk.onnx: --runtime litert runs .tflite")]:
        with pytest.raises(SystemExit) as exc:
            predict.main([str(image), "--model", str(tmp_path / "junk.onnx"), "--out", str(tmp_path / "o")] + extra)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err, err


def test_saved_model_runtime_is_kseg_load_models_exported_model(tmp_path):
    import kseg
    from kseg.runtimes import SavedModelRuntime, load_runtime
    from kseg.saving import ExportedModel
    from kseg.serving import export_model

    model = tiny_model(seed=4)
    path = export_model(model, tmp_path / "sm", "saved_model", tflite=False)
    assert isinstance(kseg.load_model(path), ExportedModel) and isinstance(kseg.load_model(path), SavedModelRuntime)
    rt = load_runtime(path, "saved_model")
    x = np.random.default_rng(0).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    out = rt(x)
    assert out["class_map"].shape == (1, 40, 56) and rt.runtime == "saved_model"
    assert Path(rt.path) == path


def test_evaluate_scores_a_litert_export_at_native_resolution_as_the_keras_model(tmp_path, tiny_iccv09):
    from kseg import evaluate
    from kseg.serving import export_model

    model = tiny_model(seed=5)
    model.save(tmp_path / "m.keras")
    tflite = export_model(model, tmp_path / "m", "litert")  # LiteRT runs without extras (TensorFlow's interpreter)
    reports = {}
    for path in (tmp_path / "m.keras", tflite):
        args = ["--model", str(path), "--data", str(tiny_iccv09), "--mask", "surfaces", "--split", "all",
                "--native", "--out", str(tmp_path / f"eval-{path.suffix[1:]}")]
        reports[path.suffix] = evaluate.run(evaluate.parse_args(args))
    assert reports[".tflite"]["model_format"] == "litert" and reports[".tflite"]["native"]
    assert reports[".tflite"]["confusion_matrix"] == reports[".keras"]["confusion_matrix"]
    with pytest.raises(KsegError, match=r"m\.tflite: --native, --scales and --flip need a \.keras model, "
                                        r"not a litert export \(it takes --native alone\)"):
        evaluate.run(evaluate.parse_args(["--model", str(tflite), "--data", str(tiny_iccv09), "--mask", "surfaces",
                                          "--flip", "--out", str(tmp_path / "e")]))
