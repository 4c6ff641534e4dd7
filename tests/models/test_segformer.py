"""SegFormer on MiT encoders: shapes, parameter counts against the reference, training, saving, export, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import batch
from kseg import models
from kseg.errors import KsegError
from kseg.models.mit import EfficientAttention, StochasticDepth, mit

# SegFormer with 150 classes (ADE20K), trainable parameters: keras-hub 0.32.0's SegFormerImageSegmenter on its
# MiTBackbone (trainable weights) gives these; for B0 so does the official network counted layer by layer
# (NVlabs mix_transformer + SegFormerHead, PyTorch parameters without BatchNorm running statistics: encoder
# 3,319,392 + decoder 433,302); the paper rounds them to 3.8M, 13.7M and 27.5M.
REFERENCE_TRAINABLE = {"mit_b0": 3_752_694, "mit_b1": 13_715_798, "mit_b2": 27_461_974}
# the MiT-B0 encoder alone (keras-hub 0.32.0's MiTBackbone for B0)
REFERENCE_MIT_B0 = 3_319_392




def quiet(**kw):
    """Builder arguments without randomness in training (no dropout, no stochastic depth)."""
    return dict(dropout=0.0, drop_path_rate=0.0, **kw)


def test_shapes_fixed_size_and_strides():
    m = models.build("segformer", backbone="mit_b0", num_classes=3, input_shape=(64, 64, 3))
    assert m.name == "segformer_mit_b0"
    assert m.output_shape == (None, 64, 64, 3)
    # four stages at strides 4, 8, 16, 32 with B0's widths
    assert [m.get_layer(f"norm{i}").output.shape for i in range(1, 5)] == [
        (None, 16, 16, 32), (None, 8, 8, 64), (None, 4, 4, 160), (None, 2, 2, 256)]
    assert m.get_layer("decode_concat").output.shape == (None, 16, 16, 4 * 256)


def test_unknown_size_model_runs_at_96x128():
    m = models.build("segformer", num_classes=3, input_shape=(None, None, 3))
    assert m.output_shape == (None, None, None, 3)
    probs = keras.ops.convert_to_numpy(m(batch(128)[0][:1, :96, :128], training=False))
    assert probs.shape == (1, 96, 128, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_default_backbone_is_mit_b0_and_registry():
    assert models.build("segformer", num_classes=2, input_shape=(32, 32, 3)).name == "segformer_mit_b0"
    assert "segformer" in models.list_models()
    assert models.supported_backbones("segformer") == ["mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5"]


@pytest.mark.parametrize("call, message", [
    (lambda: models.build("segformer", backbone="resnet34"),
     r"segformer needs a MiT backbone, got 'resnet34': choose one of mit_b0, mit_b1"),
    (lambda: models.build("segformer", encoder_weights="/nonexistent/mit.weights.h5"),
     "/nonexistent/mit.weights.h5: encoder weights file not found"),
    (lambda: mit(keras.Input((32, 32, 3)), "mit_b9"), "unknown MiT encoder 'mit_b9'"),
])
def test_user_errors_raise_kseg_error(call, message):
    with pytest.raises(KsegError, match=message):
        call()


def test_size_not_multiple_of_32_is_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        models.build("segformer", input_shape=(100, 64, 3))


@pytest.mark.parametrize("backbone", ["mit_b0", "mit_b1", "mit_b2"])
def test_parameter_counts_equal_the_reference(backbone):
    m = models.build("segformer", backbone=backbone, num_classes=150, input_shape=(32, 32, 3))
    trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert trainable == REFERENCE_TRAINABLE[backbone]
    decoder_dim = 256 if backbone in ("mit_b0", "mit_b1") else 768
    assert m.get_layer("decode_linear_fuse").kernel.shape == (1, 1, 4 * decoder_dim, decoder_dim)
    # Keras also counts the decoder BatchNorm's moving mean and variance
    assert m.count_params() == trainable + 2 * decoder_dim


def test_mit_b0_encoder_parameter_count():
    inputs = keras.Input((32, 32, 3))
    feats = mit(inputs, "mit_b0")
    assert keras.Model(inputs, list(feats.values())).count_params() == REFERENCE_MIT_B0


def test_one_training_step_lowers_the_loss():
    keras.utils.set_random_seed(0)
    x, y = batch()
    m = models.build("segformer", num_classes=3, input_shape=(64, 64, 3), **quiet())
    loss = keras.losses.CategoricalCrossentropy()
    m.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, run_eagerly=True)
    before = float(loss(y, m(x, training=True)))
    m.train_on_batch(x, y)
    after = float(loss(y, m(x, training=True)))
    assert after < before, f"loss {before:.5f} -> {after:.5f} after one step"


def test_keras_file_round_trip_gives_equal_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    x, _ = batch()
    m = models.build("segformer", num_classes=3, input_shape=(None, None, 3))
    path = tmp_path / "segformer.keras"
    m.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in m.layers]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(m(x, training=False)), rtol=0, atol=1e-6)


def test_saved_model_serves_a_uint8_image_of_another_size(tmp_path):
    import tensorflow as tf

    from kseg.export import export_saved_model

    keras.utils.set_random_seed(2)
    m = models.build("segformer", num_classes=3, input_shape=(None, None, 3))
    out = export_saved_model(m, tmp_path / "saved", tflite=False)
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    image = np.round(batch(96)[0][:1, :70, :90]).astype("uint8")
    result = served(images=tf.constant(image))
    probs = result["probabilities"].numpy()
    assert probs.shape == (1, 70, 90, 3)
    assert result["class_map"].shape == (1, 70, 90)
    # what serving does: resize to the nearest multiples of 32 (64x96), run the model, resize back
    x = tf.image.resize(tf.cast(image, tf.float32), (64, 96))
    expected = tf.image.resize(m(x, training=False), (70, 90)).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)  # the export folds the decoder's BatchNorm


def test_binary_model_builds_with_one_sigmoid_channel():
    m = models.build("segformer", num_classes=1, activation="sigmoid", input_shape=(64, 64, 3))
    assert m.output_shape == (None, 64, 64, 1)
    assert m.output_names == ["sigmoid"]
    p = keras.ops.convert_to_numpy(m(batch()[0], training=False))
    assert p.min() >= 0.0 and p.max() <= 1.0


def test_mixed_precision_last_layer_is_float32():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        m = models.build("segformer", num_classes=3, input_shape=(32, 32, 3))
    finally:
        keras.config.set_dtype_policy(policy)
    assert m.get_layer("block1_0_attn").compute_dtype == "bfloat16"
    assert m.outputs[0].dtype == "float32"


def test_encoder_weights_file_is_loaded(tmp_path):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    feats = mit(inputs, "mit_b0")
    encoder = keras.Model(inputs, [feats[s] for s in sorted(feats)])
    path = tmp_path / "mit_b0.weights.h5"
    encoder.save_weights(path)
    m = models.build("segformer", num_classes=3, input_shape=(32, 32, 3), encoder_weights=path)
    for name in ("patch_embed1_proj", "block2_1_attn_sr", "block4_1_mlp_dwconv", "norm4"):
        for a, b in zip(m.get_layer(name).get_weights(), encoder.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_encoder_freeze_leaves_only_the_decoder_trainable():
    m = models.build("segformer", num_classes=3, input_shape=(32, 32, 3), encoder_freeze=True)
    trainable = {w.path.split("/")[0] for w in m.trainable_weights}
    assert trainable and all(n.startswith("decode_") or n == "final_conv" for n in trainable)


def test_efficient_attention_equals_numpy_multi_head_attention():
    rng = np.random.default_rng(0)
    heads, c = 2, 8
    q = rng.normal(size=(2, 4, 6, c)).astype("float32")
    kv = rng.normal(size=(2, 2, 3, 2 * c)).astype("float32")
    k, v = kv[..., :c], kv[..., c:]
    got = keras.ops.convert_to_numpy(EfficientAttention(heads)([q, k, v]))
    d = c // heads
    qt, kt, vt = (t.reshape(2, -1, heads, d).transpose(0, 2, 1, 3) for t in (q, k, v))
    s = qt @ kt.transpose(0, 1, 3, 2) / np.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    expected = (a @ vt).transpose(0, 2, 1, 3).reshape(q.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_stochastic_depth_drops_whole_samples_in_training_only():
    layer = StochasticDepth(0.5, seed=0)
    x = np.ones((64, 2, 2, 3), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - rate)
    assert np.all(per_sample.min(1) == per_sample.max(1))  # each sample whole
    # the rate of the last block is drop_path_rate, rising linearly from 0 at the first
    m = models.build("segformer", num_classes=3, input_shape=(32, 32, 3), drop_path_rate=0.1)
    assert m.get_layer("block1_0_attn_drop_path").rate == 0.0
    assert m.get_layer("block4_1_mlp_drop_path").rate == pytest.approx(0.1)
