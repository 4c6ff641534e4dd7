"""Mixed precision: kseg.precision, float32 copies of bfloat16 models, and kseg.train --precision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kseg import precision, train

NATIVE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
EMULATED = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize("text,expected", [(NATIVE, True), (EMULATED, False), ("flags\t: amx_bf16 amx_tile\n", True),
                                           ("no flags line\n", False)])
def test_native_bf16_reads_the_cpu_flags(text, expected):
    assert precision.native_bf16(text) is expected


def test_bfloat16_is_flagged_only_where_it_is_emulated():
    note = precision.warning("mixed_bfloat16", gpus=0, cpuinfo=EMULATED)
    assert note.startswith("kseg: warning: --precision mixed_bfloat16") and "several times slower" in note
    assert precision.warning("mixed_bfloat16", gpus=0, cpuinfo=NATIVE) is None
    assert precision.warning("mixed_bfloat16", gpus=1, cpuinfo=EMULATED) is None  # the GPU computes it
    assert precision.warning("float32", gpus=0, cpuinfo=EMULATED) is None


def test_policy_is_restored_even_after_an_error():
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with precision.policy("mixed_bfloat16"):
            assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
            raise RuntimeError("inside")
    assert keras.mixed_precision.global_policy().name == "float32"


def _compute_dtypes(model) -> set:
    import keras

    out = set()
    for layer in model.layers:
        out.add(layer.dtype_policy.compute_dtype)
        if isinstance(layer, keras.Model):
            out |= _compute_dtypes(layer)
    return out


@pytest.mark.parametrize("name,backbone", [("unet", "resnet18"), ("deeplabv3plus", "mobilenetv2")])
def test_float32_copy_has_the_same_weights_and_computes_in_float32(name, backbone):
    from kseg import models
    from kseg.models.layers import batch_norm_layers, float32_copy, fold_batch_norm

    with precision.policy("mixed_bfloat16"):
        mixed = models.build(name, backbone=backbone, num_classes=3, input_shape=(64, 64, 3))
    assert "bfloat16" in _compute_dtypes(mixed)
    copy = float32_copy(mixed)
    assert _compute_dtypes(copy) == {"float32"}
    assert [w.path for w in copy.weights] == [w.path for w in mixed.weights]
    for a, b in zip(copy.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(a, b)
    # it computes what the same architecture built in float32 computes with these weights
    reference = models.build(name, backbone=backbone, num_classes=3, input_shape=(64, 64, 3))
    reference.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    got = np.asarray(copy(x, training=False))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(reference(x, training=False)), atol=1e-6)
    assert float32_copy(copy) is copy  # a float32 model is returned as it is
    # export folds batch norms and makes the float32 copy in one clone
    folded = fold_batch_norm(mixed, float32=True)
    assert _compute_dtypes(folded) == {"float32"}
    assert len(batch_norm_layers(folded)) < len(batch_norm_layers(mixed))
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), got, atol=1e-3)  # float32 rounding


@pytest.mark.e2e
def test_train_under_mixed_bfloat16_evaluates_and_exports_in_float32(tiny_iccv09, tmp_path):
    import keras
    import tensorflow as tf

    from kseg.export import TFLITE_NAME, load_model

    out = tmp_path / "out"
    train.main(["--data", str(tiny_iccv09), "--size", "32", "--epochs", "1", "--batch-size", "3",
                "--backbone", "resnet18", "--precision", "mixed_bfloat16", "--out", str(out), "--verbose", "0"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    saved = keras.saving.load_model(out / "best.keras", compile=False)
    assert "bfloat16" in _compute_dtypes(saved)  # the checkpoint keeps the precision it trained in
    assert _compute_dtypes(load_model(out / "best.keras")) == {"float32"}  # what kseg evaluates and serves
    report = json.loads((out / "metrics.json").read_text())
    assert report["options"]["precision"] == "mixed_bfloat16"
    assert 0.0 <= report["pixel_accuracy"] <= 1.0
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    got = serve(images=tf.zeros([1, 40, 48, 3], tf.uint8))
    assert got["probabilities"].dtype == tf.float32 and got["probabilities"].shape == (1, 40, 48, 3)
    assert (out / "saved_model" / TFLITE_NAME).stat().st_size > 0  # TFLite takes the float32 copy


def test_unknown_precision_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as err:
        train.main(["--precision", "float16"])
    assert err.value.code == 2
    assert "--precision: invalid choice: 'float16'" in capsys.readouterr().err
