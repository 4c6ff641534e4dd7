"""kseg.models.layers.FusedBatchNormalization: Keras's batch norm, computed by TensorFlow's fused kernel."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from keras import layers  # noqa: E402

from kseg.models.layers import FusedBatchNormalization, batch_norm_layers  # noqa: E402


def _pair(channels=16, momentum=0.9, seed=0, **kwargs):
    """A Keras BatchNormalization and a fused one with the same random gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    a = layers.BatchNormalization(momentum=momentum, **kwargs)
    b = FusedBatchNormalization(momentum=momentum, **kwargs)
    for layer in (a, b):
        layer.build((None, 8, 8, channels))
    weights = [rng.normal(1.0, 0.3, w.shape).astype("float32") if "variance" not in w.path
               else rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in a.weights]
    a.set_weights(weights)
    b.set_weights(weights)
    return a, b


def _step(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") ** 3)
    return y, tape.gradient(loss, [x] + layer.trainable_weights)


@pytest.mark.parametrize("kwargs", [{}, {"scale": False}, {"center": False, "epsilon": 2e-5}])
def test_fused_matches_keras_in_training_and_inference(kwargs):
    a, b = _pair(**kwargs)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 8, 8, 16)).astype("float32"))
    assert b._fusable(x, None)
    ya, ga = _step(a, x)
    yb, gb = _step(b, x)
    np.testing.assert_allclose(yb, ya, atol=1e-5)
    for p, q in zip(gb, ga):  # d/dx, d/dgamma, d/dbeta of sum(y^3): values up to ~1e3
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-3)
    # moving statistics updated the same way (Keras's biased batch variance, not the kernel's n - 1 one)
    np.testing.assert_allclose(b.moving_mean, a.moving_mean, atol=1e-6)
    np.testing.assert_allclose(b.moving_variance, a.moving_variance, rtol=1e-6)
    np.testing.assert_allclose(b(x, training=False), a(x, training=False), atol=1e-5)


def test_fused_moving_variance_is_the_biased_one():
    a, b = _pair(channels=2, momentum=0.0)  # momentum 0: the moving statistics become the batch's
    x = np.random.default_rng(2).normal(0, 1, (1, 2, 2, 2)).astype("float32")  # 4 values per channel
    b(tf.constant(x), training=True)
    np.testing.assert_allclose(b.moving_variance, x.reshape(-1, 2).var(axis=0), rtol=1e-5)
    np.testing.assert_allclose(b.moving_mean, x.reshape(-1, 2).mean(axis=0), atol=1e-6)


def test_fused_under_mixed_bfloat16_stays_bfloat16_and_close_to_keras():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        a, b = _pair()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = tf.cast(tf.constant(np.random.default_rng(3).normal(0, 2, (4, 8, 8, 16)).astype("float32")), "bfloat16")
    yb = b(x, training=True)
    assert yb.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(yb, "float32"), tf.cast(a(x, training=True), "float32"), atol=0.05)
    assert b.moving_mean.dtype == "float32"


def test_frozen_layer_uses_moving_statistics():
    a, b = _pair()
    b.trainable = False
    a.trainable = False
    x = tf.constant(np.random.default_rng(4).normal(5, 1, (2, 8, 8, 16)).astype("float32"))
    before = np.array(b.moving_mean)
    np.testing.assert_allclose(b(x, training=True), a(x, training=False), atol=1e-5)
    np.testing.assert_array_equal(b.moving_mean, before)


def test_falls_back_to_keras_where_the_kernel_does_not_apply():
    a, b = _pair()
    x3 = tf.constant(np.random.default_rng(5).normal(0, 1, (4, 10, 16)).astype("float32"))
    assert not b._fusable(x3, None)  # 3-D input
    x4 = tf.zeros((4, 8, 8, 16))
    assert b._fusable(x4, None) and not b._fusable(x4, tf.ones((4, 8, 8), bool))  # a mask
    a3 = layers.BatchNormalization(momentum=0.9)
    b3 = FusedBatchNormalization(momentum=0.9)
    np.testing.assert_allclose(b3(x3, training=True), a3(x3, training=True), atol=1e-5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KSEG_FUSED_BN", "0")
        assert not b._fusable(x4, None)
    c = FusedBatchNormalization(axis=1)
    c.build((None, 16, 8, 8))
    assert not c._fusable(tf.zeros((2, 16, 8, 8)), None)  # channels first


def test_saves_and_loads_as_the_same_layer(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    x = FusedBatchNormalization(momentum=0.5)(x)
    model = keras.Model(inputs, x)
    model(np.random.default_rng(6).normal(0, 1, (2, 8, 8, 3)).astype("float32"), training=True)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    bn = [layer for layer in loaded.layers if isinstance(layer, layers.BatchNormalization)]
    assert [type(layer) for layer in bn] == [FusedBatchNormalization]
    x = np.random.default_rng(7).normal(0, 1, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(x), model(x))


def test_kseg_models_use_the_fused_layer():
    from kseg import models

    model = models.build("unet", backbone="resnet18", num_classes=3, input_shape=(64, 64, 3))
    bns = batch_norm_layers(model)
    assert bns and all(type(layer) is FusedBatchNormalization for layer in bns)


@pytest.mark.parametrize("backbone", ["mobilenetv2", "efficientnetb0"])
def test_keras_applications_encoders_get_the_fused_layer_and_keep_their_function(backbone):
    """The encoder copy swaps each Keras batch norm for the fused one and computes what the original does
    (EfficientNet's input Normalization state included)."""
    from kseg.models import backbones

    keras.utils.set_random_seed(0)
    constructor, names, _ = backbones._APPLICATIONS[backbone]
    base = getattr(keras.applications, constructor)(include_top=False, weights=None, input_shape=(None, None, 3))
    rng = np.random.default_rng(8)
    for bn in [layer for layer in base.layers if isinstance(layer, layers.BatchNormalization)]:
        bn.moving_mean.assign(rng.normal(0, 0.1, bn.moving_mean.shape))  # non-trivial statistics
        bn.moving_variance.assign(rng.uniform(0.5, 1.5, bn.moving_variance.shape))
    for norm in [layer for layer in base.layers if isinstance(layer, layers.Normalization)]:
        norm.adapt_mean.assign([100.0, 120.0, 140.0])  # as kseg sets EfficientNet's without weights
        norm.adapt_variance.assign([3000.0, 3500.0, 4000.0])
        norm.finalize_state()
    ref = keras.Model(base.inputs, base.get_layer(names[32]).output)
    enc = backbones.atrous(ref)
    bns = batch_norm_layers(enc)
    assert len(bns) == len(batch_norm_layers(ref)) > 10
    assert all(type(layer) is FusedBatchNormalization for layer in bns)
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    # EfficientNet's dropout makes training-mode outputs random: compare it in inference mode only
    for training in (False, True) if backbone == "mobilenetv2" else (False,):
        a = keras.ops.convert_to_numpy(ref(x, training=training))
        b = keras.ops.convert_to_numpy(enc(x, training=training))
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, atol=1e-3 * float(np.abs(a).max()))


def test_built_models_on_keras_applications_use_the_fused_layer():
    from kseg import models

    model = models.build("deeplabv3plus", backbone="mobilenetv2", num_classes=3, input_shape=(64, 64, 3))
    bns = batch_norm_layers(model)
    assert len(bns) > 40 and all(type(layer) is FusedBatchNormalization for layer in bns)
