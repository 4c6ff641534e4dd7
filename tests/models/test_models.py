"""The model zoo: registry, backbones, every architecture, parameter counts, weights, JAX.

The default run builds every architecture on the ``plain`` backbone at reduced
width (plus a few real backbones) through the whole pipeline: 64x64 and
(None, None) builds, output size, one training step, ``.keras`` round trip and
SavedModel export. The same pipeline over *every* supported (architecture,
backbone) pair at full backbone width takes several minutes on a 2-core CPU:
run it with ``KSEG_TEST_ALL_PAIRS=1 pytest -m slow tests/models/test_models.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kseg import models
from conftest import batch
from kseg.errors import KsegError
from kseg.models import backbones as bb
from kseg.models.layers import AdaptiveAveragePooling, BilinearUpsampling, MaxUnpooling2D, ResizeLike

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
ARCHS = ["unet", "linknet", "fpn", "fcn32s", "fcn16s", "fcn8s", "pspnet", "segnet", "deeplabv3plus"]
BACKBONES = ["plain", "vgg16", "resnet18", "resnet34", "resnet50", "mobilenetv2", "efficientnetb0"]
MIT_ARCHS = ["segformer", "hrnet"]  # on their own encoders only, not on the backbones above
SMALL_PLAIN = {"filters": (8, 16, 32, 64, 128)}


def small(arch: str, backbone: str) -> dict:
    """Builder arguments for a quick model: narrow heads, no dropout (so a training step is deterministic)."""
    kw: dict = {}
    if backbone == "plain":
        kw["backbone_kwargs"] = dict(SMALL_PLAIN)
    if arch.startswith("fcn"):
        kw.update(dropout=0.0, fc_filters=32 if backbone == "vgg16" else None)
    elif arch == "pspnet":
        kw.update(dropout=0.0, filters=32, pool_filters=8)
    elif arch == "deeplabv3plus":
        kw.update(dropout=0.0, aspp_filters=32, low_level_filters=8, decoder_filters=32)
    elif arch == "unet":
        kw["decoder_filters"] = (64, 32, 16, 8) if backbone == "plain" else (64, 32, 16, 8, 8)
    elif arch == "fpn":
        kw["pyramid_filters"] = 32
    elif arch == "segnet" and backbone == "plain":
        pass
    return kw




def pipeline(arch, backbone, tmp_path, eager=True, **kw):
    """Build at 64x64 and (None, None), check sizes, train one step, round-trip .keras, export a SavedModel.

    ``eager`` runs the training step eagerly: tracing it costs seconds per model
    on a small CPU, and the SavedModel export below runs the graph anyway.
    """
    import tensorflow as tf

    from kseg.export import export_saved_model
    from kseg.models.layers import fold_batch_norm

    keras.utils.set_random_seed(0)
    x, y = batch()
    m = models.build(arch, backbone=backbone, num_classes=3, input_shape=(64, 64, 3), **kw)
    assert m.output_shape == (None, 64, 64, 3)
    free = models.build(arch, backbone=backbone, num_classes=3, input_shape=(None, None, 3), **kw)
    assert free.output_shape == (None, None, None, 3)

    loss = keras.losses.CategoricalCrossentropy()
    # a small step: Adam moves every weight by about lr at first, and the zero-initialised score layers of FCN
    # read 2048-channel features on resnet50, where 1e-3 per weight overshoots
    m.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, run_eagerly=eager)
    before = float(loss(y, m(x, training=True)))
    m.train_on_batch(x, y)
    after = float(loss(y, m(x, training=True)))
    assert after < before, f"{arch}/{backbone}: loss {before:.5f} -> {after:.5f} after one step"

    path = tmp_path / f"{arch}_{backbone}.keras"
    m.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    # the reloaded model is the same model: same graph, bit-identical weights ...
    def config(model):  # as JSON: a reloaded config holds lists where the built one holds tuples
        return json.dumps(model.get_config(), sort_keys=True, default=str)

    assert config(loaded) == config(m)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), m.get_weights()))
    # ... and the same outputs. Bit-identical for most pairs; for fcn16s/fcn8s on resnet50 and pspnet and
    # deeplabv3plus on efficientnetb0 the reloaded model's float32 probabilities differ slightly (measured at
    # most 3e-5 on pspnet/efficientnetb0 and 1.4e-4 on deeplabv3plus/efficientnetb0, with equal configs and
    # bit-identical weights, while the same model rebuilt with set_weights is bit-identical; cause not found),
    # so compare at 5e-4.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(m(x, training=False)), rtol=0, atol=5e-4)

    # kseg's SavedModel of the (None, None) model: serving runs it in a TF graph at a run-time size
    out = export_saved_model(free, tmp_path / f"{arch}_{backbone}_saved", tflite=False)
    folded = fold_batch_norm(free)
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    for h, w in ((64, 64), (96, 64)):
        images = np.round(batch(max(h, w))[0][:1, :h, :w]).astype("uint8")
        probs = served(images=tf.constant(images))["probabilities"].numpy()
        assert probs.shape == (1, h, w, 3)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)  # softmax probabilities at the input's size
        # the export serves the model with its batch norms folded into the convolutions: the same function,
        # but float32 rounds differently on these untrained nets' large scores (measured up to 5.8e-4 in
        # probability on pspnet/resnet18 after one step; a float64 U-Net resnet34 body folds to 1.8e-7
        # relative, so that is rounding, not a wrong fold, which would differ by ~0.1)
        np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(folded(images.astype("float32"))), atol=1e-4)
        np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(free(images.astype("float32"))), atol=2e-3)


# --------------------------------------------------------------------------- registry

def test_registry_names_and_supported_pairs():
    assert models.list_models() == sorted(ARCHS + MIT_ARCHS)  # MiT-only architectures: tests/models/test_segformer.py
    assert models.supported_backbones("segformer")[0] == "mit_b0"
    assert models.list_backbones() == sorted(BACKBONES)
    assert models.supported_backbones("segnet") == ["plain", "vgg16"]
    assert models.supported_backbones("deeplabv3plus") == sorted(BACKBONES)


@pytest.mark.parametrize("call, message", [
    (lambda: models.build("nosuchnet"), "unknown model 'nosuchnet'"),
    (lambda: models.build("fcn8s", backbone="resnet101"), "unknown backbone 'resnet101'"),
    (lambda: models.build("segnet", backbone="resnet18"), "max-pools at every stride"),
    (lambda: models.build("deeplabv3plus", backbone="resnet18", output_stride=32), "16 or 8"),
    (lambda: models.build("unet", backbone="mobilenetv2", input_shape=(64, 64, 1), encoder_weights="imagenet"),
     "needs 3 input channels"),
    (lambda: models.build("unet", backbone="resnet50", encoder_weights="/nonexistent/w.h5"), "not found"),
    (lambda: models.build("unet", backbone="plain", encoder_weights="imagenet"), "no ImageNet weights"),
])
def test_user_errors_raise_kseg_error(call, message):
    with pytest.raises(KsegError, match=message):
        call()


@pytest.mark.parametrize("arch", ARCHS)
def test_sizes_not_multiple_of_32_are_refused(arch):
    with pytest.raises(ValueError, match="multiple of 32"):
        models.build(arch, backbone="plain", input_shape=(100, 64, 3), **small(arch, "plain"))


# --------------------------------------------------------------------------- every architecture, whole pipeline

FAST_PAIRS = [(a, "plain") for a in ARCHS] + [
    ("deeplabv3plus", "mobilenetv2"),  # a keras.applications encoder made atrous
    ("pspnet", "resnet18"),            # kseg's own ResNet made atrous
    ("fcn8s", "vgg16"),                # the paper's FCN (narrow fc6/fc7), pool3/pool4 skips
]


@pytest.mark.parametrize("arch, backbone", FAST_PAIRS)
def test_pipeline(arch, backbone, tmp_path):
    pipeline(arch, backbone, tmp_path, **small(arch, backbone))


@pytest.mark.parametrize("upsampling", ["bilinear", "transpose"])
def test_unet_decoder_upsampling(upsampling, tmp_path):
    pipeline("unet", "plain", tmp_path, upsampling=upsampling, **small("unet", "plain"))
    m = models.build("unet", backbone="plain", upsampling=upsampling, **small("unet", "plain"))
    kinds = {type(layer).__name__ for layer in m.layers}
    assert ("Conv2DTranspose" in kinds) == (upsampling == "transpose")


ALL_PAIRS = [(a, b) for a in ARCHS for b in models.supported_backbones(a)]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KSEG_TEST_ALL_PAIRS") != "1",
                    reason="every (architecture, backbone) pair at full backbone width takes minutes on a small CPU: "
                           "set KSEG_TEST_ALL_PAIRS=1")
@pytest.mark.parametrize("arch, backbone", ALL_PAIRS)
def test_pipeline_every_pair(arch, backbone, tmp_path):
    pipeline(arch, backbone, tmp_path, eager=False, **small(arch, backbone))


# --------------------------------------------------------------------------- backbones

@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_strides_atrous_and_channels(name):
    """Level s is at stride s (or at the output stride when atrous); the atrous net is the same net, denser.

    Where the conversion is exact (no global pooling inside the backbone), the
    stride-16 network sampled every other pixel equals the stride-32 network
    with the same weights.
    """
    kw = {"filters": SMALL_PLAIN["filters"]} if name == "plain" else {}
    x = batch(64)[0]
    nets = {}
    for os_ in (32, 16):
        inputs = keras.Input((None, None, 3))
        feats = bb.features(name, inputs, output_stride=os_, **kw)
        assert set(feats) >= {2, 4, 8, 16, 32}
        nets[os_] = keras.Model(inputs, [feats[k] for k in sorted(feats)])
        levels = sorted(feats)
    for layer in nets[32].layers:  # same weights in both
        if layer.weights:
            nets[16].get_layer(layer.name).set_weights(layer.get_weights())
    for os_, net in nets.items():
        for level, out in zip(levels, net.predict(x, verbose=0)):
            assert out.shape[1:3] == (64 // min(level, os_),) * 2, (os_, level, out.shape)
    deep32 = nets[32].predict(x, verbose=0)[-1]
    deep16 = nets[16].predict(x, verbose=0)[-1]
    if name != "efficientnetb0":  # its squeeze-excitation averages over all positions
        offset = 1 if name == "mobilenetv2" else 0  # 'valid' + asymmetric padding centres differ by one pixel
        scale = np.abs(deep32).max()
        assert scale > 0
        np.testing.assert_allclose(deep16[:, offset::2, offset::2], deep32, atol=1e-4 * scale, rtol=1e-4)
    # any channel count without pretrained weights
    inputs = keras.Input((None, None, 4))
    feats = bb.features(name, inputs, output_stride=16, **kw)
    out = keras.Model(inputs, feats[32]).predict(np.concatenate([x, x[..., :1]], -1), verbose=0)
    assert out.shape[1:3] == (4, 4)


def _copy_weights(src, dst):
    """Weights from ``src`` into ``dst`` layer by layer name (nested models too)."""
    for layer in src.layers:
        if isinstance(layer, keras.Model):
            _copy_weights(layer, dst.get_layer(layer.name))
        elif layer.weights:
            dst.get_layer(layer.name).set_weights(layer.get_weights())


@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet18"])
def test_trained_deeplab_at_output_stride_8_is_the_model_built_at_8(backbone):
    """atrous(model, 8) of a stride-16 DeepLabV3+ is, weight for weight and output for output, the one built at 8.

    mobilenetv2 is a nested keras.applications encoder (converted inside), resnet18 kseg's own inline
    layers; the ASPP rates double (6/12/18 -> 12/24/36) and the decoder's x4 upsampling becomes x2.
    """
    kw = dict(small("deeplabv3plus", backbone), num_classes=3, input_shape=(None, None, 3), activation=None)
    m16 = models.build("deeplabv3plus", backbone=backbone, **kw)
    rng = np.random.default_rng(1)
    for w in m16.weights:  # He-normal kernels: untrained mobilenetv2 logits are ~1e-5, too flat to tell strides apart
        if "kernel" in w.path:
            fan_in = np.prod(w.shape[:2] if "depthwise" in w.path else w.shape[:-1])
            w.assign(rng.normal(0, np.sqrt(2 / fan_in), w.shape))
    m8 = models.build("deeplabv3plus", backbone=backbone, output_stride=8, **kw)
    _copy_weights(m16, m8)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 128, 3)).astype("float32")
    got = bb.atrous(m16, 8)
    assert got.get_layer("aspp3_depthwise").dilation_rate == (36, 36)
    assert got.get_layer("decoder_upsampling").size == 2
    want, before = m8.predict(x, verbose=0), m16.predict(x, verbose=0)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got.predict(x, verbose=0), want, atol=1e-5 * scale)
    assert np.abs(before - want).max() > 0.05 * scale  # a different function: the test can tell them apart
    np.testing.assert_array_equal(bb.atrous(m16, 16).predict(x, verbose=0), before)  # 16 -> 16: unchanged


def test_output_stride_refuses_learned_upsampling_past_it():
    m = models.build("unet", backbone="resnet18", num_classes=3, input_shape=(64, 64, 3), **small("unet", "resnet18"))
    with pytest.raises(KsegError, match="unet_resnet18.*decoder_stage0a_conv.*UpsampleConv2D.*stride 32, past 16"):
        bb.atrous(m, 16)


def test_unpooling_puts_values_at_the_argmax():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 6, 8, 3)).astype("float32")
    x = rng.normal(size=(2, 3, 4, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(MaxUnpooling2D()([x, feats]))
    want = np.zeros_like(feats)
    for n, i, j, c in np.ndindex(2, 3, 4, 3):
        win = feats[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
        a, b = np.unravel_index(np.argmax(win), (2, 2))
        want[n, 2 * i + a, 2 * j + b, c] = x[n, i, j, c]
    np.testing.assert_array_equal(got, want)


def test_adaptive_pooling_matches_pytorch_rule_at_odd_sizes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 5, 7, 2)).astype("float32")
    got = keras.ops.convert_to_numpy(AdaptiveAveragePooling(3)(x))
    want = np.zeros((1, 3, 3, 2), "float32")
    for i in range(3):
        for j in range(3):
            r0, r1 = (i * 5) // 3, -(-(i + 1) * 5 // 3)
            c0, c1 = (j * 7) // 3, -(-(j + 1) * 7 // 3)
            want[0, i, j] = x[0, r0:r1, c0:c1].mean((0, 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_resize_like_is_bilinear_upsampling():
    x = np.random.default_rng(2).normal(size=(1, 3, 2, 4)).astype("float32")
    ref = np.zeros((1, 12, 8, 1), "float32")
    got = keras.ops.convert_to_numpy(ResizeLike()([x, ref]))
    want = keras.ops.convert_to_numpy(keras.layers.UpSampling2D(4, interpolation="bilinear")(x))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bilinear_initialiser_upsamples_a_constant_to_a_constant():
    layer = keras.layers.Conv2DTranspose(2, 16, strides=8, padding="same", use_bias=False,
                                         kernel_initializer=BilinearUpsampling())
    out = keras.ops.convert_to_numpy(layer(np.ones((1, 4, 4, 2), "float32")))
    assert out.shape == (1, 32, 32, 2)
    np.testing.assert_allclose(out[0, 8:-8, 8:-8], 1.0, atol=1e-5)


# --------------------------------------------------------------------------- architecture specifics

def _layers(model, kind):
    return [layer for layer in model.layers if type(layer).__name__ == kind]


def test_fcn_variants_fuse_the_right_skips_by_sum():
    for variant, skips in (("fcn32s", set()), ("fcn16s", {"score_pool4"}), ("fcn8s", {"score_pool3", "score_pool4"})):
        m = models.build(variant, backbone="vgg16", input_shape=(64, 64, 3), fc_filters=16)
        names = {layer.name for layer in m.layers}
        assert {n for n in names if n.startswith("score_pool")} == skips
        assert len(_layers(m, "Add")) == len(skips)
        ups = _layers(m, "Conv2DTranspose")
        assert [u.strides[0] for u in ups] == [2] * len(skips) + [32 >> len(skips)]
        assert all(u.trainable for u in ups)
        assert not _layers(m, "UpSampling2D")
        fc6 = m.get_layer("fc6")
        assert fc6.kernel_size == (7, 7) and m.get_layer("fc7").kernel_size == (1, 1)


def test_pspnet_any_size_and_aux_head():
    kw = small("pspnet", "plain")
    m = models.build("pspnet", backbone="plain", aux=True, **kw)
    assert len(m.outputs) == 2
    for h, w in ((32, 32), (96, 64), (160, 224)):  # feature maps 4x4, 12x8, 20x28: bins 3 and 6 do not divide them
        main, aux = m.predict(np.full((1, h, w, 3), 128.0, "float32"), verbose=0)
        assert main.shape == aux.shape == (1, h, w, 3)
    bins = sorted(layer.bins for layer in _layers(m, "AdaptiveAveragePooling"))
    assert bins == [1, 2, 3, 6]


@pytest.mark.parametrize("output_stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_deeplab_aspp_rates_and_decoder(output_stride, rates):
    m = models.build("deeplabv3plus", backbone="resnet18", input_shape=(64, 64, 3), output_stride=output_stride,
                     **small("deeplabv3plus", "resnet18"))
    got = tuple(m.get_layer(f"aspp{i}_depthwise").dilation_rate[0] for i in (1, 2, 3))
    assert got == rates
    assert m.get_layer("aspp_concat").output.shape[1] == 64 // output_stride
    assert m.get_layer("decoder_concat").output.shape[1] == 16  # fused at stride 4
    assert m.get_layer("aspp_image_pooling") is not None
    assert len(_layers(m, "DepthwiseConv2D")) == 5  # 3 ASPP + 2 decoder separable convolutions


def test_segnet_unpools_with_indices_and_learns_no_upsampling():
    m = models.build("segnet", backbone="vgg16", input_shape=(64, 64, 3))
    assert len(_layers(m, "MaxUnpooling2D")) == 5
    assert not _layers(m, "Conv2DTranspose") and not _layers(m, "UpSampling2D")
    widths = [layer.filters for layer in m.layers if type(layer).__name__ == "Conv2D"]
    assert widths == [512] * 3 + [512, 512, 256] + [256, 256, 128] + [128, 64] + [64] + [3]


def test_encoder_freeze_freezes_only_the_encoder():
    for backbone in ("plain", "mobilenetv2"):
        kw = small("fcn8s", backbone)
        free = models.build("fcn8s", backbone=backbone, input_shape=(64, 64, 3), **kw)
        frozen = models.build("fcn8s", backbone=backbone, input_shape=(64, 64, 3), encoder_freeze=True, **kw)
        assert frozen.count_params() == free.count_params()
        trainable = {w.path for w in frozen.trainable_weights}
        assert trainable and all(not p.startswith(("plain_", "mobilenetv2_encoder")) for p in trainable)
        assert {w.path for w in free.trainable_weights} > trainable


# --------------------------------------------------------------------------- parameter counts

def test_backbone_parameter_counts_equal_keras_applications():
    # reference: keras.applications built directly (include_top=False); the numbers are Keras 3's
    reference = {"vgg16": ("VGG16", 14_714_688), "resnet50": ("ResNet50", 23_587_712),
                 "mobilenetv2": ("MobileNetV2", 2_257_984), "efficientnetb0": ("EfficientNetB0", 4_049_571)}
    for name, (ctor, pinned) in reference.items():
        inputs = keras.Input((None, None, 3))
        feats = bb.features(name, inputs)
        ours = keras.Model(inputs, [feats[k] for k in sorted(feats)]).count_params()
        theirs = getattr(keras.applications, ctor)(include_top=False, weights=None).count_params()
        assert ours == theirs == pinned, name


@pytest.mark.parametrize("arch, backbone, classes, pinned, reference", [
    # segmentation_models 1.0.1: sm.Unet('resnet34', classes=3) has 24,456,444 parameters
    ("unet", "resnet34", 3, 24_456_444, ("exact", 24_456_444)),
    # Long et al. 2015, Table 1: FCN-VGG16 has 134M parameters (21 PASCAL VOC classes), not counting the
    # final upsampling, which the reference nets keep fixed at bilinear (lr_mult 0); kseg learns it
    ("fcn32s", "vgg16", 21, 136_152_917, ("millions", 134)),
    ("fcn16s", "vgg16", 21, 134_815_994, ("millions", 134)),
    ("fcn8s", "vgg16", 21, 134_489_759, ("millions", 134)),
    # Badrinarayanan et al. 2017, Table 6: SegNet has 29.5M parameters (11 CamVid classes)
    ("segnet", "vgg16", 11, 29_444_619, ("within", 29.5e6, 0.1e6)),
    ("pspnet", "resnet50", 3, 46_668_163, None),
    ("deeplabv3plus", "resnet50", 3, 26_788_787, None),
    ("deeplabv3plus", "mobilenetv2", 3, 4_440_691, None),
    ("unet", "vgg16", 3, 19_039_091, None),
])
def test_parameter_counts(arch, backbone, classes, pinned, reference):
    """kseg's counts, pinned, beside the published figure where there is one."""
    m = models.build(arch, backbone=backbone, num_classes=classes, input_shape=(None, None, 3))
    n = m.count_params()
    assert n == pinned
    if reference is None:
        return
    if reference[0] == "exact":
        assert n == reference[1]
    elif reference[0] == "millions":
        final = [layer for layer in m.layers if layer.name.startswith("upscore") and "to" not in layer.name]
        assert len(final) == 1
        assert round((n - final[0].count_params()) / 1e6) == reference[1]
    else:
        assert abs(n - reference[1]) < reference[2]


# --------------------------------------------------------------------------- ImageNet weights

def _h5_weights(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for name in f.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            g = f[name]
            out[name] = [np.asarray(g[w]) for w in g.attrs["weight_names"]]
    return {k: v for k, v in out.items() if v}


@pytest.mark.skipif(not WEIGHTS.exists(), reason=f"{WEIGHTS} not found")
@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus"])
def test_mobilenetv2_imagenet_weights_from_a_path(arch):
    """The encoder holds the file's arrays exactly, also after the atrous conversion (DeepLabV3+)."""
    m = models.build(arch, backbone="mobilenetv2", num_classes=3, input_shape=(64, 64, 3),
                     encoder_weights=str(WEIGHTS))
    encoder = m.get_layer("mobilenetv2_encoder")
    ref = _h5_weights(WEIGHTS)
    assert len(ref) == 104
    for name, arrays in ref.items():
        got = encoder.get_layer(name).get_weights()
        assert len(got) == len(arrays), name
        for a, b in zip(got, arrays):
            np.testing.assert_array_equal(a, b, err_msg=name)
    # and they are not what a random initialisation gives
    rand = models.build(arch, backbone="mobilenetv2", num_classes=3, input_shape=(64, 64, 3))
    assert not np.array_equal(rand.get_layer("mobilenetv2_encoder").get_layer("Conv1").get_weights()[0],
                              ref["Conv1"][0])


@pytest.mark.skipif(not WEIGHTS.exists(), reason=f"{WEIGHTS} not found")
def test_mobilenetv2_imagenet_weights_from_the_keras_cache_offline(tmp_path):
    """``encoder_weights="imagenet"`` finds the official file name in $KERAS_HOME/models (no network)."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    (home / "models" / WEIGHTS.name).symlink_to(WEIGHTS)
    code = textwrap.dedent(f"""
        import numpy as np, h5py
        from kseg import models
        m = models.build("fcn32s", backbone="mobilenetv2", num_classes=3, input_shape=(64, 64, 3),
                         encoder_weights="imagenet")
        k = m.get_layer("mobilenetv2_encoder").get_layer("Conv1").get_weights()[0]
        with h5py.File({str(WEIGHTS)!r}) as f:
            g = f["Conv1"]
            ref = np.asarray(g[g.attrs["weight_names"][0]])
        print("EQUAL" if np.array_equal(k, ref) else "DIFFERENT")
    """)
    env = {**os.environ, "KERAS_HOME": str(home), "PYTHONPATH": str(REPO), "KERAS_BACKEND": "tensorflow",
           "HTTP_PROXY": "http://0.0.0.0:9", "HTTPS_PROXY": "http://0.0.0.0:9"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "EQUAL"


# --------------------------------------------------------------------------- JAX

def test_every_architecture_builds_under_jax():
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("jax is not installed (pip install jax) -- the JAX build test needs it")
    code = textwrap.dedent(f"""
        import json, numpy as np, keras
        assert keras.backend.backend() == "jax"
        from kseg import models
        small = {{"backbone_kwargs": {{"filters": {SMALL_PLAIN['filters']!r}}}}}
        out = {{}}
        x = np.full((1, 64, 96, 3), 100.0, "float32")
        for arch in {ARCHS!r}:
            kw = dict(small)
            if arch == "unet":
                kw["decoder_filters"] = (32, 16, 8, 8)
            if arch == "fpn":
                kw["pyramid_filters"] = 32
            fixed = models.build(arch, backbone="plain", num_classes=3, input_shape=(64, 96, 3), **kw)
            assert tuple(fixed.output_shape) == (None, 64, 96, 3)
            m = models.build(arch, backbone="plain", num_classes=3, input_shape=(None, None, 3), **kw)
            y = keras.ops.convert_to_numpy(m(x, training=False))
            assert np.allclose(y.sum(-1), 1.0, atol=1e-4)
            out[arch] = list(y.shape)
        from kseg.models.torchvision_deeplab import deeplabv3_resnet50
        for name, m in [("segformer", models.build("segformer", backbone="mit_b0", num_classes=3)),
                        ("hrnet", models.build("hrnet", backbone="hrnet_w18_small", num_classes=3)),
                        ("deeplabv3_resnet50", deeplabv3_resnet50(3))]:
            y = keras.ops.convert_to_numpy(m(x, training=False))
            assert np.allclose(y.sum(-1), 1.0, atol=1e-4)
            out[name] = list(y.shape)
        print(json.dumps(out))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    shapes = json.loads(r.stdout.strip().splitlines()[-1])
    assert shapes == {a: [1, 64, 96, 3] for a in ARCHS + ["segformer", "hrnet", "deeplabv3_resnet50"]}


@pytest.mark.slow
def test_fcn_fc6_fc7_start_from_vgg16s_classifier(tmp_path):
    """fc6/fc7 are VGG16's fc1/fc2 reshaped to convolutions (weights from a VGG16-with-top file, offline)."""
    keras.utils.set_random_seed(3)
    top = keras.applications.VGG16(include_top=True, weights=None)
    path = tmp_path / "vgg16_top.weights.h5"
    top.save_weights(path)
    m = models.build("fcn32s", backbone="vgg16", num_classes=3, input_shape=(64, 64, 3), fc_weights=str(path))
    k1, b1 = top.get_layer("fc1").get_weights()
    k6, b6 = m.get_layer("fc6").get_weights()
    assert k6.shape == (7, 7, 512, 4096)
    np.testing.assert_array_equal(k6, k1.reshape(7, 7, 512, 4096))
    np.testing.assert_array_equal(b6, b1)
    # the same map: a dense layer on a flattened 7x7x512 patch equals the 7x7 convolution at its centre
    patch = np.random.default_rng(0).normal(size=(1, 7, 7, 512)).astype("float32")
    dense = patch.reshape(1, -1) @ k1 + b1
    conv = keras.ops.convert_to_numpy(keras.ops.conv(patch, k6, padding="valid"))[0, 0, 0] + b6
    np.testing.assert_allclose(conv, dense[0], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(m.get_layer("fc7").get_weights()[0][0, 0], top.get_layer("fc2").get_weights()[0])
    with pytest.raises(KsegError, match="needs the vgg16 backbone"):
        models.build("fcn32s", backbone="resnet18", num_classes=3, input_shape=(64, 64, 3), fc_weights=str(path))


@pytest.mark.parametrize("strides,rate", [(1, 1), (1, 2), (2, 1)])
def test_resnet_3x3_equals_zero_padding_then_valid_conv(strides, rate):
    """kseg's resnet builds classification_models' ZeroPadding2D(rate) + 'valid' 3x3 convolution as one 'same'
    convolution at stride 1 (no pad layer); at stride 2 it keeps the pad. Same weights, same outputs."""
    inputs = keras.Input((10, 12, 4))
    ours = keras.Model(inputs, bb._conv3x3(inputs, 5, strides, rate, "pad", "conv"))
    x = keras.layers.ZeroPadding2D(rate)(inputs)
    ref = keras.Model(inputs, keras.layers.Conv2D(5, 3, strides=strides, dilation_rate=rate, use_bias=False)(x))
    ref.layers[-1].set_weights(ours.get_layer("conv").get_weights())
    assert any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in ours.layers) == (strides > 1)
    x = np.random.default_rng(0).standard_normal((2, 10, 12, 4)).astype("float32")
    want = ref.predict(x, verbose=0)
    assert want.shape == (2, 10 // strides, 12 // strides, 5)
    np.testing.assert_allclose(ours.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", models.list_models())
def test_every_architecture_builds_with_its_own_default_backbone(arch):
    """The registry's sweep: ``models.build(arch, num_classes=...)`` with no backbone named works for every
    architecture kseg lists, on its default backbone, and maps an image to per-pixel class probabilities."""
    model = models.build(arch, num_classes=5, input_shape=(64, 64, 3))
    assert models.default_backbone(arch) in model.name
    out = np.asarray(model(np.zeros((1, 64, 64, 3), "float32"), training=False))
    assert out.shape == (1, 64, 64, 5)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-4)
