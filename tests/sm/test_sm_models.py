"""kseg.sm's Unet, Linknet, FPN and PSPNet against segmentation_models 1.0.1: signatures, counts, refusals.

The counts are segmentation_models 1.0.1's, measured once with its own venv
(docs/segmentation-models.md has the command); kseg.sm must build the same.
The default run builds a representative few; every model x backbone pair
(minutes on a small CPU) runs with ``KSEG_TEST_ALL_PAIRS=1 pytest -m slow tests/sm/test_sm_models.py``.
"""

from __future__ import annotations

import inspect
import os

import keras
import numpy as np
import pytest

from kseg import sm
from kseg.models import backbones as bb

# segmentation_models 1.0.1 (tf.keras, TensorFlow 2.21), encoder_weights=None, the defaults otherwise
# (classes 1 for Unet/Linknet, 21 for FPN/PSPNet; PSPNet at 192x192):
# (total parameters, trainable parameters with encoder_freeze=True)
SM_COUNTS = {
    "Unet/vgg16": (23_752_273, 9_033_553),
    "Unet/vgg19": (29_061_969, 9_033_553),
    "Unet/resnet18": (14_340_570, 3_159_636),
    "Unet/resnet34": (24_456_154, 3_167_060),
    "Unet/resnet50": (32_561_114, 9_058_644),
    "Unet/resnet101": (51_605_466, 9_110_868),
    "Unet/resnet152": (67_295_194, 9_156_948),
    "Unet/mobilenet": (8_336_337, 5_127_377),
    "Unet/mobilenetv2": (8_047_441, 5_821_585),
    "Unet/efficientnetb0": (10_115_501, 6_105_969),
    "Linknet/vgg16": (20_325_137, 5_603_633),
    "Linknet/vgg19": (25_634_833, 5_603_633),
    "Linknet/resnet18": (11_521_690, 340_660),
    "Linknet/resnet34": (21_637_274, 348_084),
    "Linknet/resnet50": (28_783_386, 5_275_252),
    "Linknet/resnet101": (47_827_738, 5_327_476),
    "Linknet/resnet152": (63_517_466, 5_373_556),
    "Linknet/mobilenet": (4_546_065, 1_335_153),
    "Linknet/mobilenetv2": (4_144_577, 1_916_369),
    "Linknet/efficientnetb0": (6_096_333, 2_084_017),
    "FPN/vgg16": (17_595_605, 2_878_613),
    "FPN/vgg19": (22_905_301, 2_878_613),
    "FPN/resnet18": (13_838_430, 2_657_176),
    "FPN/resnet34": (23_954_014, 2_664_600),
    "FPN/resnet50": (26_934_878, 3_432_088),
    "FPN/resnet101": (45_979_230, 3_484_312),
    "FPN/resnet152": (61_668_958, 3_530_392),
    "FPN/mobilenet": (6_126_165, 2_916_885),
    "FPN/mobilenetv2": (5_233_109, 3_006_933),
    "FPN/efficientnetb0": (7_061_553, 3_051_701),
    "PSPNet/vgg16": (10_101_589, 2_461_205),
    "PSPNet/vgg19": (13_051_477, 2_461_205),
    "PSPNet/resnet18": (2_172_126, 1_479_960),
    "PSPNet/resnet34": (2_838_238, 1_481_240),
    "PSPNet/resnet50": (3_918_558, 2_469_912),
    "PSPNet/resnet101": (3_918_558, 2_469_912),
    "PSPNet/resnet152": (5_044_958, 2_476_056),
    "PSPNet/mobilenet": (1_948_117, 1_808_789),
    "PSPNet/mobilenetv2": (1_713_045, 1_645_909),
    "PSPNet/efficientnetb0": (1_849_207, 1_768_277),
}

# named variants: (model, backbone, arguments) -> (total, trainable with encoder_freeze=True)
SM_VARIANTS = {
    "Unet/vgg16/classes=3,transpose": (24_974_707, 10_255_987),
    "Unet/resnet34/transpose,nobn": (25_675_322, 4_388_212),
    "Unet/resnet34/filters=(128,64,32,16)": (22_583_258, 1_295_188),
    "Unet/resnet34/features=names3": (24_437_722, 3_148_628),
    "Unet/vgg16/features=names5": (23_761_489, 9_042_769),
    "Unet/vgg16/features=idx": (23_752_273, 9_033_553),
    "Unet/mobilenetv2/features=idx": (6_665_041, 4_439_185),
    "Linknet/resnet34/transpose": (21_791_386, 502_196),
    "Linknet/vgg16/nobn,filters": (20_314_577, 5_599_889),
    "FPN/resnet34/sum,nobn,128,dropout": (21_926_110, 639_000),
    "FPN/mobilenetv2/classes=3": (5_212_355, 2_986_179),
    "PSPNet/resnet34/factor16": (9_993_950, 1_815_064),
    "PSPNet/vgg16/factor4,max,nobn,256,dropout": (2_374_997, 639_509),
    "PSPNet/resnet50/classes=3,factor8": (3_835_596, 2_386_950),
}

FAST = [("Unet", "vgg16"), ("Unet", "resnet18"), ("Linknet", "resnet18"), ("FPN", "mobilenetv2"),
        ("PSPNet", "resnet34"), ("PSPNet", "vgg16")]


def count(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def build(kind, backbone, freeze=False, **kw):
    shape = (192, 192, 3) if kind == "PSPNet" else (None, None, 3)
    return getattr(sm, kind)(backbone, input_shape=shape, encoder_weights=None, encoder_freeze=freeze, **kw)


def check_counts(kind, backbone, expected, **kw):
    total, frozen = expected
    model = build(kind, backbone, freeze=True, **kw)
    assert (model.count_params(), count(model)) == (total, frozen)
    keras.backend.clear_session()


@pytest.mark.parametrize("kind, backbone", FAST)
def test_parameter_counts_equal_segmentation_models(kind, backbone):
    check_counts(kind, backbone, SM_COUNTS[f"{kind}/{backbone}"])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KSEG_TEST_ALL_PAIRS") != "1",
                    reason="every model x backbone pair takes minutes on a small CPU: set KSEG_TEST_ALL_PAIRS=1")
@pytest.mark.parametrize("key", sorted(SM_COUNTS))
def test_parameter_counts_every_pair(key):
    kind, backbone = key.split("/")
    check_counts(kind, backbone, SM_COUNTS[key])


def test_the_table_covers_every_model_and_backbone_kseg_sm_offers():
    offered = {f"{k}/{b}" for k in ("Unet", "Linknet", "FPN", "PSPNet") for b in sm.get_available_backbone_names()}
    assert set(SM_COUNTS) == offered


VARIANT_ARGS = {
    "Unet/vgg16/classes=3,transpose": dict(classes=3, activation="softmax", decoder_block_type="transpose"),
    "Unet/resnet34/transpose,nobn": dict(decoder_block_type="transpose", decoder_use_batchnorm=False),
    "Unet/resnet34/filters=(128,64,32,16)": dict(decoder_filters=(128, 64, 32, 16)),
    "Unet/resnet34/features=names3": dict(encoder_features=("stage4_unit1_relu1", "stage3_unit1_relu1",
                                                            "stage2_unit1_relu1")),
    "Unet/vgg16/features=names5": dict(encoder_features=("block5_conv3", "block4_conv3", "block3_conv3",
                                                         "block2_conv2", "block1_conv2")),
    "Unet/vgg16/features=idx": dict(encoder_features=(17, 13, 9, 5)),
    "Unet/mobilenetv2/features=idx": dict(encoder_features=(116, 54, 27, 9)),
    "Linknet/resnet34/transpose": dict(decoder_block_type="transpose"),
    "Linknet/vgg16/nobn,filters": dict(decoder_use_batchnorm=False, decoder_filters=(None, None, None, 32, 8)),
    "FPN/resnet34/sum,nobn,128,dropout": dict(pyramid_aggregation="sum", pyramid_use_batchnorm=False,
                                              pyramid_block_filters=128, pyramid_dropout=0.2),
    "FPN/mobilenetv2/classes=3": dict(classes=3),
    "PSPNet/resnet34/factor16": dict(downsample_factor=16),
    "PSPNet/vgg16/factor4,max,nobn,256,dropout": dict(downsample_factor=4, psp_pooling_type="max",
                                                       psp_use_batchnorm=False, psp_conv_filters=256,
                                                       psp_dropout=0.5),
    "PSPNet/resnet50/classes=3,factor8": dict(classes=3),
}


@pytest.mark.parametrize("key", sorted(VARIANT_ARGS))
def test_option_variants_have_segmentation_models_counts(key):
    kind, backbone, _ = key.split("/")
    check_counts(kind, backbone, SM_VARIANTS[key], **VARIANT_ARGS[key])


def test_signatures_and_defaults_are_segmentation_models():
    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()}

    common = dict(input_shape=(None, None, 3), weights=None, encoder_weights="imagenet", encoder_freeze=False)
    unet = defaults(sm.Unet)
    assert list(unet)[:3] == ["backbone_name", "input_shape", "classes"]
    assert unet == dict(common, backbone_name="vgg16", classes=1, activation="sigmoid", encoder_features="default",
                        decoder_block_type="upsampling", decoder_filters=(256, 128, 64, 32, 16),
                        decoder_use_batchnorm=True, kwargs=inspect.Parameter.empty)
    assert defaults(sm.Linknet) == dict(unet, decoder_filters=(None, None, None, None, 16))
    assert defaults(sm.FPN) == dict(common, backbone_name="vgg16", classes=21, activation="softmax",
                                    encoder_features="default", pyramid_block_filters=256,
                                    pyramid_use_batchnorm=True, pyramid_aggregation="concat", pyramid_dropout=None,
                                    kwargs=inspect.Parameter.empty)
    assert defaults(sm.PSPNet) == dict(common, backbone_name="vgg16", input_shape=(384, 384, 3), classes=21,
                                       activation="softmax", downsample_factor=8, psp_conv_filters=512,
                                       psp_pooling_type="avg", psp_use_batchnorm=True, psp_dropout=None,
                                       kwargs=inspect.Parameter.empty)


def test_vgg16_unet_has_the_centre_block_and_four_skips():
    model = sm.Unet("vgg16", classes=3, activation="softmax", encoder_weights=None)
    names = {layer.name for layer in model.layers}
    assert {"center_block1_conv", "center_block2_conv"} <= names
    # the last decoder level has no skip: its fused conv sees only the 32 channels of the level before
    assert model.get_layer("decoder_stage4a_conv").kernel.shape == (3, 3, 32, 16)
    assert model.count_params() == 23_752_563  # segmentation_models 1.0.1, classes=3


def test_kseg_unet_on_vgg16_is_unchanged():
    from kseg import models

    model = models.build("unet", backbone="vgg16", num_classes=3)
    names = {layer.name for layer in model.layers}
    assert "center_block1_conv" not in names
    assert model.get_layer("decoder_stage4a_conv").kernel.shape == (3, 3, 32 + 64, 16)  # stride-1 skip
    assert model.count_params() == 19_039_091


def test_encoder_freeze_leaves_batch_norm_trainable():
    model = sm.Unet("resnet18", encoder_weights=None, encoder_freeze=True)
    enc = [layer for layer in model.layers if layer.name.startswith(("stage", "conv0", "bn0", "bn_data"))]
    assert enc and all(layer.trainable == isinstance(layer, keras.layers.BatchNormalization) for layer in enc)
    assert count(model) == SM_COUNTS["Unet/resnet18"][1]
    nested = sm.Unet("mobilenetv2", encoder_weights=None, encoder_freeze=True).get_layer("mobilenetv2_encoder")
    kinds = {(isinstance(layer, keras.layers.BatchNormalization), layer.trainable) for layer in nested.layers[1:]
             if layer.weights}
    assert kinds == {(True, True), (False, False)}


def test_models_run_at_small_sizes():
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    for fn in (sm.Unet, sm.Linknet, sm.FPN):
        model = fn("resnet18", input_shape=(64, 64, 3), classes=2, activation="softmax", encoder_weights=None)
        y = keras.ops.convert_to_numpy(model(x))
        assert y.shape == (1, 64, 64, 2)
        np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-4)
    model = sm.PSPNet("resnet18", input_shape=(144, 144, 3), classes=2, encoder_weights=None)  # 144 = 3 x 48
    assert model.output_shape == (None, 144, 144, 2)
    assert keras.ops.convert_to_numpy(model(np.zeros((1, 144, 144, 3), "float32"))).shape == (1, 144, 144, 2)


def test_default_encoder_weights_reach_kseg_loader(monkeypatch):
    seen = []

    def features(name, inputs, weights=None, **kw):
        seen.append((name, weights))
        raise RuntimeError("stop")

    monkeypatch.setattr(bb, "features", features)
    with pytest.raises(RuntimeError, match="stop"):
        sm.Unet("resnet34")
    assert seen == [("resnet34", "imagenet")]


def test_backbone_names_and_framework():
    names = sm.get_available_backbone_names()
    assert names == sorted(["vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                            "mobilenet", "mobilenetv2", "efficientnetb0"])
    sm.set_framework("TF.Keras")
    assert sm.framework() == "tf.keras"
    sm.set_framework("Keras")
    assert sm.framework() == "keras"
    sm.set_framework("tf.keras")
    with pytest.raises(ValueError, match="framework must be 'keras' or 'tf.keras', got 'torch'"):
        sm.set_framework("torch")


@pytest.mark.parametrize("call, message", [
    (lambda: sm.Unet("densenet121", encoder_weights=None), "kseg.sm does not provide backbone 'densenet121'"),
    (lambda: sm.get_preprocessing("inceptionv3"), "kseg.sm does not provide backbone 'inceptionv3'"),
    (lambda: sm.Linknet("resnet999", encoder_weights=None), "unknown backbone 'resnet999'"),
    (lambda: sm.Unet("resnet18", encoder_weights=None, alpha=0.5), "kseg.sm.Unet does not accept 'alpha'"),
    (lambda: sm.PSPNet("resnet18", encoder_weights=None, final_interpolation="bilinear"),
     "kseg.sm.PSPNet does not accept 'final_interpolation'"),
    (lambda: sm.Unet("resnet18", encoder_weights=None, decoder_block_type="pixelshuffle"),
     "decoder_block_type must be 'upsampling' or 'transpose', got 'pixelshuffle'"),
    (lambda: sm.Unet("resnet18", encoder_weights=None, encoder_features=(16, 8)),
     "encoder_features by index is not supported for backbone 'resnet18'"),
    (lambda: sm.Unet("vgg16", encoder_weights=None, encoder_features=("block9_conv1",)),
     "backbone 'vgg16' has no layer 'block9_conv1'"),
    (lambda: sm.Unet("vgg16", encoder_weights=None, encoder_features=(99,)), "has no layer index 99 in kseg"),
    (lambda: sm.Unet("vgg16", encoder_weights=None, encoder_features="block4_conv3"),
     "encoder_features must be 'default' or a list"),
    (lambda: sm.FPN("resnet18", encoder_weights=None, pyramid_aggregation="max"),
     "pyramid_aggregation must be 'concat' or 'sum', got 'max'"),
    (lambda: sm.FPN("resnet18", encoder_weights=None, encoder_features=("relu0",)), "FPN needs 4 encoder_features"),
    (lambda: sm.PSPNet("resnet18", encoder_weights=None, input_shape=(None, None, 3)), "multiples of 48"),
    (lambda: sm.PSPNet("resnet18", encoder_weights=None, input_shape=(128, 128, 3)), "multiples of 48"),
    (lambda: sm.PSPNet("resnet18", encoder_weights=None, input_shape=(192, 192, 3), downsample_factor=16),
     None),
    (lambda: sm.PSPNet("resnet18", encoder_weights=None, input_shape=(144, 144, 3), downsample_factor=16),
     "multiples of 96"),
    (lambda: sm.PSPNet("resnet18", encoder_weights=None, downsample_factor=2), "downsample_factor must be 4, 8 or 16"),
    (lambda: sm.PSPNet("resnet18", encoder_weights=None, psp_pooling_type="min"),
     "psp_pooling_type must be 'avg' or 'max'"),
    (lambda: sm.Unet("resnet50"), "no ImageNet weights for 'resnet50' in segmentation_models' layout"),
    (lambda: sm.Linknet("resnet18", encoder_weights=None, decoder_filters=(None,) * 5),
     "decoder_filters\\[4\\] is None"),
])
def test_what_kseg_sm_cannot_honour_is_a_one_line_value_error(call, message):
    if message is None:  # the accepted neighbour of a refused case
        assert call() is not None
        return
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
