"""kseg.models.layers: FusedBatchNormalization (Keras's batch norm, computed by TensorFlow's fused kernel) and
UpsampleConv2D (U-Net's upsample + concatenate + 3x3 convolution, computed at the low resolution)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from keras import layers  # noqa: E402

from kseg.models.layers import FusedBatchNormalization, UpsampleConv2D, batch_norm_layers  # noqa: E402


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


# --------------------------------------------------------------------------- UpsampleConv2D

def _upsample_concat(x, skip=None):
    """What UpsampleConv2D's convolution replaces the input of: Keras's nearest UpSampling2D, then Concatenate."""
    up = layers.UpSampling2D(2)(x)
    return up if skip is None else layers.Concatenate()([up, skip])


def _explicit_upsample_conv(layer, x, skip):
    """UpsampleConv2D's function computed the explicit way: upsample, concatenate, the same 3x3 convolution."""
    y = tf.nn.conv2d(_upsample_concat(x, skip), layer.kernel, 1, "SAME")
    return y + layer.bias if layer.use_bias else y


def _value_and_grads(fn, layer, x, skip):
    with tf.GradientTape() as tape:
        tape.watch(x)
        if skip is not None:
            tape.watch(skip)
        y = fn(x, skip)
        loss = tf.reduce_sum(y ** 3)
    grads = tape.gradient(loss, [x] + ([skip] if skip is not None else []) + layer.trainable_weights)
    return y, grads


@pytest.mark.parametrize("x_shape, skip_channels, use_bias", [((2, 7, 5, 6), 3, True), ((2, 4, 4, 8), 0, False),
                                                             ((1, 1, 3, 4), 5, True)])
def test_upsample_conv_computes_upsample_concat_conv_and_its_gradients(x_shape, skip_channels, use_bias):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(0, 1, x_shape).astype("float32"))
    skip = (tf.constant(rng.normal(0, 1, (x_shape[0], 2 * x_shape[1], 2 * x_shape[2], skip_channels))
                        .astype("float32")) if skip_channels else None)
    layer = UpsampleConv2D(5, use_bias=use_bias, bias_initializer="random_normal")
    layer([x] if skip is None else [x, skip])
    assert tuple(layer.kernel.shape) == (3, 3, x_shape[-1] + skip_channels, 5)

    fused = _value_and_grads(lambda a, b: layer([a] if b is None else [a, b]), layer, x, skip)
    explicit = _value_and_grads(lambda a, b: _explicit_upsample_conv(layer, a, b), layer, x, skip)
    assert fused[0].shape == (x_shape[0], 2 * x_shape[1], 2 * x_shape[2], 5)
    np.testing.assert_allclose(fused[0], explicit[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(fused[1], explicit[1]):  # d/dx, d/dskip, d/dkernel (, d/dbias)
        scale = float(tf.reduce_max(tf.abs(want)))
        np.testing.assert_allclose(np.asarray(got) / scale, np.asarray(want) / scale, atol=1e-5)


def test_upsample_conv_explicit_switch_and_unknown_sizes(monkeypatch):
    x_in, s_in = keras.Input((None, None, 4)), keras.Input((None, None, 2))
    layer = UpsampleConv2D(3)
    model = keras.Model([x_in, s_in], layer([x_in, s_in]))
    assert model.output.shape == (None, None, None, 3)
    rng = np.random.default_rng(1)
    x, s = rng.normal(0, 1, (2, 6, 10, 4)).astype("float32"), rng.normal(0, 1, (2, 12, 20, 2)).astype("float32")
    specs = [tf.TensorSpec((None, None, None, 4)), tf.TensorSpec((None, None, None, 2))]

    def traced():  # a new trace reads KSEG_FUSED_UPSAMPLE; returns the op types and the function
        fn = tf.function(lambda a, b: layer([a, b])).get_concrete_function(*specs)
        return {op.type for op in fn.graph.get_operations()}, fn

    fused_ops, fused = traced()
    monkeypatch.setenv("KSEG_FUSED_UPSAMPLE", "0")
    explicit_ops, explicit = traced()
    assert "DepthToSpace" in fused_ops and "DepthToSpace" not in explicit_ops
    np.testing.assert_allclose(np.asarray(explicit(x, s)), np.asarray(fused(x, s)), rtol=1e-5, atol=1e-5)
    assert fused(x, s).shape == (2, 12, 20, 3)


def test_upsample_conv_refuses_what_it_does_not_compute():
    for kwargs in ({"kernel_size": 5}, {"strides": 2}, {"dilation_rate": 2}, {"padding": "valid"}):
        with pytest.raises(ValueError, match="3x3, stride-1"):
            UpsampleConv2D(4, **kwargs)


def test_unet_decoder_is_the_explicit_graph_with_the_same_weights(tmp_path):
    """kseg's U-Net (nearest upsampling) against a copy whose UpsampleConv2D layers are replaced by
    UpSampling2D -> Concatenate -> Conv2D with the same weights: same scores, same gradients; the model
    saves, loads and folds its batch norms like any other."""
    from kseg import models
    from kseg.models.layers import fold_batch_norm

    model = models.build("unet", backbone="resnet18", num_classes=3, input_shape=(None, None, 3), activation=None)
    fused_layers = [layer for layer in model.layers if isinstance(layer, UpsampleConv2D)]
    assert len(fused_layers) == 5
    assert not [layer for layer in model.layers if isinstance(layer, (layers.UpSampling2D, layers.Concatenate))]

    originals = {}

    def clone(layer):
        if isinstance(layer, UpsampleConv2D):
            config = layer.get_config()
            config.pop("padding", None)
            new = layers.Conv2D(**config, padding="same")
        else:
            new = layer.__class__.from_config(layer.get_config())
        originals[id(new)] = layer
        return new

    def call(layer, *args, **kwargs):
        original = originals[id(layer)]
        inputs = args[0]
        if isinstance(original, UpsampleConv2D):
            inputs = _upsample_concat(*inputs)
        out = layer(inputs, *args[1:], **kwargs)
        layer.set_weights(original.get_weights())
        return out

    explicit = keras.models.clone_model(model, clone_function=clone, call_function=call)
    assert explicit.count_params() == model.count_params()
    x = tf.constant(np.random.default_rng(2).uniform(0, 255, (2, 64, 96, 3)).astype("float32"))
    y = tf.one_hot(np.random.default_rng(3).integers(0, 3, (2, 64, 96)), 3)

    def grads(m):  # inference-mode batch norm: batch statistics of a random net would amplify float rounding
        with tf.GradientTape() as tape:
            p = m(x, training=False)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, p, from_logits=True))
        return p, tape.gradient(loss, m.trainable_weights)

    (p1, g1), (p2, g2) = grads(model), grads(explicit)  # logits (of an untrained net: large), relative to their size
    scale = float(tf.reduce_max(tf.abs(p2)))
    np.testing.assert_allclose(np.asarray(p1) / scale, np.asarray(p2) / scale, atol=1e-5)
    for a, b in zip(g1, g2):
        g_scale = float(tf.reduce_max(tf.abs(b))) or 1.0
        np.testing.assert_allclose(np.asarray(a) / g_scale, np.asarray(b) / g_scale, atol=1e-4)

    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)) / scale, np.asarray(model(x)) / scale, atol=1e-6)
    folded = fold_batch_norm(model)
    assert len(batch_norm_layers(folded)) < len(batch_norm_layers(model))
    np.testing.assert_allclose(np.asarray(folded(x)) / scale, np.asarray(model(x)) / scale, atol=1e-5)


def test_export_copies_swap_kerass_bilinear_upsampling_for_one_that_traces_at_any_size(tmp_path):
    """Keras's bilinear UpSampling2D cannot trace at a run-time size (ops.image.resize compares it to 0); the
    copies kseg evaluates and exports with hold kseg's BilinearUpSampling2D instead, computing the same."""
    import tensorflow as tf

    import kseg
    from kseg.models.layers import float32_copy, fold_batch_norm
    from kseg.models.resampling import BilinearUpSampling2D
    from kseg.serving import export_saved_model

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, strides=4, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="up")(x)
    model = keras.Model(inputs, layers.Softmax()(x))
    with pytest.raises(Exception):
        tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3])]).get_concrete_function()
    image = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    for copy in (float32_copy(model), fold_batch_norm(model)):
        assert isinstance(copy.get_layer("up"), BilinearUpSampling2D)
        # the same function: float32 rounding only (folding the batch norm reorders the arithmetic)
        np.testing.assert_allclose(np.asarray(copy(image)), np.asarray(model(image)), atol=1e-4)
    export_saved_model(model, tmp_path / "exported", tflite=False)
    served = kseg.load_model(tmp_path / "exported").predict(image[0].astype(np.uint8))
    assert served["probabilities"].shape == (64, 96, 4)
    fixed = keras.Input((32, 32, 3))  # at a fixed size Keras's layer traces: such a model is left as it is
    fixed_model = keras.Model(fixed, layers.UpSampling2D(2, interpolation="bilinear")(fixed))
    assert float32_copy(fixed_model) is fixed_model
