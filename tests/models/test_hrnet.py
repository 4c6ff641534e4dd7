"""HRNetV2 (kseg.models.hrnet): shapes, timm's parameter counts and layer names, training, saving, export."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg import models, precision
from kseg.errors import KsegError
from kseg.models.hrnet import HEAD_LAYERS, backbone_layers, hrnet_features

# timm 1.0.31: sum(p.numel() for p in timm.create_model(v, features_only=True, feature_location="").parameters()),
# and the state dict without num_batches_tracked (the BN moving statistics too); equal to the full classifier's
# parameters minus incre_modules, downsamp_modules, final_layer and classifier
TIMM_BACKBONE_PARAMS = {
    "hrnet_w18_small": (1_477_920, 1_484_672),
    "hrnet_w18_small_v2": (3_860_720, 3_876_668),
    "hrnet_w18": (9_562_260, 9_596_196),
}


def rand_images(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def dynamic():
    keras.utils.set_random_seed(0)
    return models.build("hrnet", num_classes=3, input_shape=(None, None, 3))


def _counts(layers_):
    trainable = sum(int(np.prod(w.shape)) for layer in layers_ for w in layer.trainable_weights)
    return trainable, sum(int(np.prod(w.shape)) for layer in layers_ for w in layer.weights)


def test_default_backbone_and_output_shapes(dynamic):
    assert dynamic.name == "hrnet_w18_small_v2"
    for h, w in ((64, 64), (96, 128)):
        probs = keras.ops.convert_to_numpy(dynamic(rand_images(2, h, w).astype("float32"), training=False))
        assert probs.shape == (2, h, w, 3)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    fixed = models.build("hrnet", num_classes=5, input_shape=(64, 64, 3))
    assert fixed.output_shape == (None, 64, 64, 5)
    # four branches at strides 4, 8, 16, 32, concatenated at stride 4 (18 + 36 + 72 + 144 channels)
    assert fixed.get_layer("concat").output.shape == (None, 16, 16, 270)
    assert fixed.get_layer("last_layer_3").output.shape == (None, 16, 16, 5)


@pytest.mark.parametrize("backbone", list(TIMM_BACKBONE_PARAMS))
def test_backbone_parameters_equal_timm(backbone, dynamic):
    if backbone == "hrnet_w18_small_v2":
        model = dynamic
    else:
        inputs = keras.Input((None, None, 3))
        model = keras.Model(inputs, hrnet_features(inputs, backbone))
    assert _counts(backbone_layers(model)) == TIMM_BACKBONE_PARAMS[backbone]


def test_layers_are_named_after_timm_modules(dynamic):
    """timm's module path with "." -> "_" names the Keras layer; the kernel is the transposed weight's shape."""
    expected = {  # timm state-dict key -> (kh, kw, in, out) of hrnet_w18_small_v2
        "conv1.weight": (3, 3, 3, 64),
        "layer1.0.downsample.0.weight": (1, 1, 64, 256),
        "layer1.1.conv3.weight": (1, 1, 64, 256),
        "transition1.0.0.weight": (3, 3, 256, 18),
        "transition1.1.0.0.weight": (3, 3, 256, 36),
        "transition3.3.0.0.weight": (3, 3, 72, 144),
        "stage3.2.branches.2.1.conv2.weight": (3, 3, 72, 72),
        "stage4.1.fuse_layers.0.3.0.weight": (1, 1, 144, 18),
        "stage4.1.fuse_layers.3.0.1.0.weight": (3, 3, 18, 18),
        "stage4.1.fuse_layers.3.0.2.0.weight": (3, 3, 18, 144),
    }
    for key, shape in expected.items():
        assert tuple(dynamic.get_layer(key.rsplit(".", 1)[0].replace(".", "_")).kernel.shape) == shape
    bn = dynamic.get_layer("stage4_1_fuse_layers_3_0_2_1")
    assert bn.gamma.shape == (144,) and bn.epsilon == 1e-5 and bn.momentum == 0.9
    assert not dynamic.get_layer("stage2_0_fuse_layers_1_0_0_0").use_bias
    # every convolution is initialised on its own (not one initialiser's values repeated for each shape)
    a, b = (dynamic.get_layer(f"stage3_0_branches_0_0_conv{i}").kernel for i in (1, 2))
    assert a.shape == b.shape and not np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_one_training_step_lowers_the_loss():
    keras.utils.set_random_seed(1)
    model = models.build("hrnet", backbone="hrnet_w18_small", num_classes=3, input_shape=(64, 64, 3))
    # eagerly: tracing the train step of HRNet's ~1000-layer graph takes far longer than two steps
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=True)
    x = rand_images(2, 64, 64, seed=1).astype("float32")
    y = np.zeros((2, 64, 64), np.int32)
    y[:, 32:] = 1
    y[:, :, :16] = 2
    before = float(model.train_on_batch(x, y))  # the loss of the batch before the update
    after = float(model.train_on_batch(x, y))  # ... and after one step
    assert after < 0.9 * before


def test_keras_round_trip_gives_equal_outputs(dynamic, tmp_path):
    path = tmp_path / "hrnet.keras"
    dynamic.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    x = rand_images(1, 64, 96, seed=2).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(dynamic(x, training=False)), atol=1e-6)


def test_saved_model_serves_uint8_of_another_size(dynamic, tmp_path):
    from kseg.export import export_saved_model

    out = export_saved_model(dynamic, tmp_path / "sm", tflite=False)
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    images = rand_images(1, 50, 70, seed=3)
    res = serve(images=tf.constant(images))
    probs, cmap = res["probabilities"].numpy(), res["class_map"].numpy()
    assert probs.shape == (1, 50, 70, 3) and cmap.shape == (1, 50, 70)
    x = tf.image.resize(tf.cast(images, tf.float32), (64, 64), method="bilinear")  # nearest multiples of 32
    expected = tf.image.resize(dynamic(x, training=False), (50, 70), method="bilinear").numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-3)
    assert (cmap != expected.argmax(-1)).mean() < 1e-2


def test_binary_builds_with_a_float32_output_under_mixed_precision():
    with precision.policy("mixed_bfloat16"):
        model = models.build("hrnet", backbone="hrnet_w18_small", num_classes=1, activation="sigmoid",
                             input_shape=(64, 64, 3))
    assert model.get_layer("conv1").dtype_policy.compute_dtype == "bfloat16"
    p = keras.ops.convert_to_numpy(model(rand_images(1, 64, 64).astype("float32"), training=False))
    assert p.shape == (1, 64, 64, 1) and p.dtype == np.float32
    assert 0.0 <= p.min() and p.max() <= 1.0


def test_encoder_freeze_leaves_only_the_head_trainable():
    model = models.build("hrnet", backbone="hrnet_w18_small", num_classes=3, input_shape=(64, 64, 3),
                         encoder_freeze=True)
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == set(HEAD_LAYERS)


def test_supported_backbones():
    assert models.supported_backbones("hrnet") == ["hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18",
                                                   "hrnet_w32", "hrnet_w48"]
    assert "hrnet" in models.list_models()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(backbone="resnet34"), KsegError,
     "hrnet has no backbone 'resnet34': choose one of hrnet_w18_small, hrnet_w18_small_v2, hrnet_w18, "),
    (dict(input_shape=(100, 64, 3)), ValueError, "multiple of 32"),
])
def test_user_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        models.build("hrnet", num_classes=3, **kwargs)
