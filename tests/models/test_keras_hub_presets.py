"""keras-hub's DeepLabV3+ preset (``deeplabv3plus-resnet50-voc``) as a kseg model, offline.

The reference is keras-hub itself (0.32, the ``hub`` and ``test`` extras): a small DeepLabV3+ (ResNet with
pre-activation, ASPP, the P2 decoder) with random weights and an image converter of its own scale and
offset, written as a keras-hub preset folder by ``save_to_preset``, as the published preset is. kseg loads
the folder through keras-hub's ``from_preset`` and must compute what keras-hub's segmenter computes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models import presets

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (pip install 'kseg[hub]')")

PRESET = "deeplabv3plus-resnet50-voc"
SCALE, OFFSET = [1 / 58.4, 1 / 57.1, 1 / 57.4], [-2.1, -2.0, -1.8]


def _segmenter(num_classes: int = 21, activation=None):
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[8], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 8, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=True)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8, dilation_rates=[6, 12, 18],
        low_level_feature_key="P2", projection_filters=8)
    converter = keras_hub.layers.DeepLabV3ImageConverter(image_size=(96, 96), scale=SCALE, offset=OFFSET)
    preprocessor = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(image_converter=converter)
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=num_classes,
                                                    activation=activation, preprocessor=preprocessor)


@pytest.fixture(scope="module")
def preset_dir(tmp_path_factory):
    """A keras-hub preset folder named as the published variant, holding a random DeepLabV3+."""
    import keras

    root = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(0)
    segmenter = _segmenter()
    segmenter.save_to_preset(str(root / "deeplab_v3_plus_resnet50_pascalvoc"))
    return root


@pytest.fixture
def offline(preset_dir, monkeypatch):
    monkeypatch.setenv("KSEG_WEIGHTS_DIR", str(preset_dir))
    monkeypatch.delenv("KSEG_KERAS_HUB_PRESET", raising=False)
    return preset_dir


def _image(h=90, w=130, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, h, w, 3)).astype("float32")


def _reference(preset_dir, x):
    import keras

    segmenter = keras_hub.models.ImageSegmenter.from_preset(str(preset_dir / "deeplab_v3_plus_resnet50_pascalvoc"))
    # keras-hub's predict() calls it with training=False; a bare call would run batch norms in training mode
    return np.asarray(keras.ops.softmax(segmenter(x * np.float32(SCALE) + np.float32(OFFSET), training=False)))


def test_the_preset_computes_what_keras_hub_computes(offline):
    model, info = presets.load_preset(PRESET)
    x = _image(96, 128)
    want = _reference(offline, x)
    before = [w.copy() for w in model.get_weights()]
    for training in (None, False):  # inference, the preset's batch-norm statistics unchanged, even called bare
        got = np.asarray(model(x, training=training))
        assert got.shape == want.shape == (1, 96, 128, 21)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert info["class_names"][15] == "person" and info["colors"][15] == [192, 128, 128]
    assert info["short_side"] == 96  # the preset converter's image size
    assert "keras-hub's deeplab_v3_plus_resnet50_pascalvoc" in info["source"]


def test_it_saves_loads_and_exports_for_any_photo_size(offline, tmp_path):
    import kseg
    from kseg.inference import Predictor
    from kseg.serving import export_saved_model

    model, _ = presets.load_preset(PRESET)
    model.save(tmp_path / "voc.keras")
    again = kseg.load_model(tmp_path / "voc.keras")
    x = _image(96, 128, seed=1)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-5)
    before = [w.copy() for w in again.get_weights()]
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-5)  # a bare call: inference
    assert all(np.array_equal(a, b) for a, b in zip(before, again.get_weights()))
    photo = _image(75, 110, seed=2)[0].round().astype(np.uint8)  # not a multiple of 32
    want = Predictor(model)(photo)
    export_saved_model(model, tmp_path / "exported", tflite=False)
    served = kseg.load_model(tmp_path / "exported").predict(photo)
    assert served["probabilities"].shape == want.shape == (75, 110, 21)
    np.testing.assert_allclose(served["probabilities"], want, atol=1e-4)
    tta = Predictor(model, scales=(0.5, 1.0), flip=True)(photo)
    assert tta.shape == (75, 110, 21) and np.allclose(tta.sum(-1), 1.0, atol=1e-4)


def test_kseg_predict_runs_it_on_a_photo_with_a_legend(offline, tmp_path, capsys):
    from PIL import Image

    from kseg.predict import main

    photo = tmp_path / "cat.jpg"
    Image.fromarray(_image(60, 80)[0].astype(np.uint8)).save(photo)
    assert main(["--model", PRESET, str(photo), "--out", str(tmp_path / "out")]) == 0
    assert "keras-hub's deeplab_v3_plus_resnet50_pascalvoc" in capsys.readouterr().err
    assert np.asarray(Image.open(tmp_path / "out" / "cat.png")).shape[:2] == (60, 80)
    overlay = np.asarray(Image.open(tmp_path / "out" / "cat_overlay.png"))
    assert overlay.shape[0] > 60 and overlay.shape[1] == 80  # the legend strip below the photo


def test_a_preset_folder_given_by_path_and_a_broken_one(offline, monkeypatch, tmp_path):
    monkeypatch.delenv("KSEG_WEIGHTS_DIR")
    monkeypatch.setenv("KSEG_KERAS_HUB_PRESET", str(offline / "deeplab_v3_plus_resnet50_pascalvoc"))
    assert presets.load_preset(PRESET)[0].outputs[0].shape[-1] == 21
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    monkeypatch.setenv("KSEG_KERAS_HUB_PRESET", str(broken))
    with pytest.raises(KsegError, match=r"broken: could not load keras-hub's deeplabv3plus-resnet50-voc") as err:
        presets.load_preset(PRESET)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("KSEG_KERAS_HUB_PRESET", str(tmp_path / "absent"))
    with pytest.raises(KsegError, match="absent: no such preset folder"):
        presets.load_preset(PRESET)


def test_a_segmenter_with_other_classes_is_refused_and_softmax_is_not_applied_twice():
    from kseg.models.keras_hub_presets import wrap_segmenter

    with pytest.raises(KsegError, match="the preset has 3 classes, not the 21"):
        wrap_segmenter(_segmenter(num_classes=3), PRESET, 21)
    segmenter = _segmenter(num_classes=4, activation="softmax")
    model = wrap_segmenter(segmenter, "x", 4)
    x = _image(64, 64)
    want = np.asarray(segmenter(x * np.float32(SCALE) + np.float32(OFFSET), training=False))
    np.testing.assert_allclose(np.asarray(model(x)), want, atol=1e-6)


def test_without_keras_hub_the_preset_and_its_keras_file_say_how_to_install_it(offline, monkeypatch, tmp_path):
    import kseg

    model, _ = presets.load_preset(PRESET)
    model.save(tmp_path / "voc.keras")
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub now raises ImportError
    with pytest.raises(KsegError, match=r"deeplabv3plus-resnet50-voc needs keras-hub.*pip install 'kseg\[hub\]'"):
        presets.load_preset(PRESET)
    with pytest.raises(KsegError, match=r"voc.keras needs keras-hub, which is not installed"):
        kseg.load_model(tmp_path / "voc.keras")
