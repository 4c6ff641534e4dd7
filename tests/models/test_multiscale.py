"""Learned multi-scale attention (kseg.models.multiscale): the merge by hand, fixed attention, shared weights,
gradients, training, saving, export, and the commands' options."""

from __future__ import annotations

import json
import math
import re

import keras
import numpy as np
import pytest

from conftest import batch, make_tiny_iccv09
from kseg import models
from kseg.errors import KsegError
from kseg.models.multiscale import (HEAD, TRUNK, MultiScaleMerge, at_scales, attention_maps, info, is_multiscale,
                                    single_scale, with_scales)

LOG3 = math.log(3.0)  # sigmoid(log 3) = 0.75; softmax(log 3, 0) = (0.75, 0.25)


def tiny_base(seed=0, size=(64, 64)):
    keras.utils.set_random_seed(seed)
    return models.build("unet", backbone="plain", num_classes=3, input_shape=(*(size or (None, None)), 3),
                        backbone_kwargs={"filters": (8, 8, 8, 16, 16)}, decoder_filters=(16, 8, 8, 8))


def tiny_ms(mode="hierarchical", scales=(0.5, 1.0), seed=0, size=(64, 64), **kw):
    base = tiny_base(seed, size)
    return base, models.multiscale(base, mode=mode, train_scales=scales, attention_filters=4, **kw)


def fix_attention(ms, bias):
    """Make the attention head's output the constant ``bias`` (one value per output channel)."""
    conv = ms.get_layer(HEAD).get_layer("attention_logits")
    kernel, b = conv.get_weights()
    conv.set_weights([np.zeros_like(kernel), np.asarray(bias, "float32").reshape(b.shape)])


def _const(v, channels=3):
    return np.full((1, 2, 2, channels), v, "float32")


# --------------------------------------------------------------------------- the merge, by hand


@pytest.mark.parametrize("mode,logits,attention,expected", [
    # a = sigmoid(log 3) = 0.75: 0.75 * 2 + 0.25 * 6
    ("hierarchical", (2.0, 6.0), [_const(LOG3, 1)], 3.0),
    # 0.75 * 2 + 0.25 * (0.5 * 6 + 0.5 * 10): the smallest scale against the merge of the larger two
    ("hierarchical", (2.0, 6.0, 10.0), [_const(LOG3, 1), _const(0.0, 1)], 3.5),
    # softmax(log 3, 0) = (0.75, 0.25)
    ("attention", (2.0, 6.0), [np.concatenate([_const(LOG3, 1), _const(0.0, 1)], -1)], 3.0),
    # softmax(log 2, 0, 0) = (0.5, 0.25, 0.25): 1 + 1.5 + 2.5
    ("attention", (2.0, 6.0, 10.0), [np.concatenate([_const(math.log(2), 1), _const(0, 1), _const(0, 1)], -1)], 5.0),
])
def test_merge_equals_the_hand_computed_case(mode, logits, attention, expected):
    scales = (0.5, 1.0, 2.0)[:len(logits)]
    merge = MultiScaleMerge(mode, scales)
    out = np.asarray(merge([_const(v) for v in logits] + attention))
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    weights = np.asarray(MultiScaleMerge(mode, scales, output="weights")([_const(v) for v in logits] + attention))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def test_three_scale_model_merges_its_trunks_predictions_as_the_paper_chains_them():
    _, ms = tiny_ms("hierarchical")
    fix_attention(ms, [LOG3])  # a = 0.75 at every scale
    three = with_scales(ms, (0.5, 1.0, 2.0))
    x, _ = batch(64, n=1)
    trunk = ms.get_layer(TRUNK)

    def logits(scale):  # the trunk's logits at `scale`, resized to the input (the model's own resizing)
        size = 64 if scale == 1 else int(64 * scale)
        xs = keras.ops.image.resize(x, (size, size)) if scale != 1 else x
        lo = np.asarray(trunk(xs)[0])
        return np.asarray(keras.ops.image.resize(lo, (64, 64))) if scale != 1 else lo

    merged = 0.75 * logits(0.5) + 0.25 * (0.75 * logits(1.0) + 0.25 * logits(2.0))
    expected = np.asarray(keras.ops.softmax(merged, axis=-1))
    np.testing.assert_allclose(np.asarray(three(x)), expected, atol=2e-5)


# --------------------------------------------------------------------------- attention fixed to 1 or 0


@pytest.mark.parametrize("mode,bias,scale", [
    ("hierarchical", [-1e4], 1.0), ("hierarchical", [1e4], 0.5),
    ("attention", [-1e4, 1e4], 1.0), ("attention", [1e4, -1e4], 0.5),
])
def test_attention_fixed_to_one_scale_reproduces_that_scale(mode, bias, scale):
    base, ms = tiny_ms(mode)
    fix_attention(ms, bias)
    x, _ = batch(64)
    got = np.asarray(ms(x))
    if scale == 1.0:  # exactly the wrapped model's prediction
        np.testing.assert_allclose(got, np.asarray(base(x)), atol=1e-6)
    np.testing.assert_allclose(got, np.asarray(single_scale(ms, scale)(x)), atol=1e-6)
    maps = np.asarray(attention_maps(ms)(x))
    np.testing.assert_array_equal(maps[..., info(ms)["scales"].index(scale)], 1.0)


# --------------------------------------------------------------------------- one trunk, gradients, training


@pytest.mark.parametrize("mode", ["hierarchical", "attention"])
def test_the_trunk_is_one_set_of_variables_shared_with_the_wrapped_model(mode):
    # a model built at any input size is wrapped as it is (a fixed-size one: a copy with the same weights)
    base, ms = tiny_ms(mode, scales=(0.5, 1.0, 2.0) if mode == "attention" else (0.5, 1.0), size=None)
    head = ms.get_layer(HEAD)
    ids = [id(v) for v in ms.weights]
    assert len(ids) == len(set(ids)) == len(base.weights) + len(head.weights)
    assert {id(v) for v in base.weights} <= set(ids)
    three = with_scales(ms, (0.5, 1.0, 2.0)) if mode == "hierarchical" else ms
    assert {id(v) for v in three.weights} == set(ids)


@pytest.mark.parametrize("mode", ["hierarchical", "attention"])
def test_gradients_reach_every_variable_of_trunk_and_head(mode):
    import tensorflow as tf

    from kseg import losses

    _, ms = tiny_ms(mode)
    ms.compile("adam", loss=losses.get("ce"))
    x, y = batch(64)
    with tf.GradientTape() as tape:
        y_pred = ms(x, training=True)
        loss = ms.compute_loss(x, y, y_pred)
    grads = tape.gradient(loss, ms.trainable_variables)
    assert len(grads) == len(ms.trainable_variables) > 0
    missing = [v.path for v, g in zip(ms.trainable_variables, grads) if g is None or not np.any(np.asarray(g))]
    assert not missing
    assert any(HEAD in v.path or "attention" in v.path for v in ms.trainable_variables)


def test_training_returns_every_scales_logits_and_adds_their_losses():
    from kseg import losses

    _, ms = tiny_ms("hierarchical", aux_weight=0.5)
    ce = losses.get("ce")
    ms.compile("adam", loss=ce)
    x, y = batch(64)
    packed = ms(x, training=True)
    assert packed.shape[-1] == 3 * 3  # merged probabilities, then each scale's logits
    merged, per_scale = ms.unpack(packed)
    expected = float(ce(y, merged)) + 0.5 * sum(float(ce(y, keras.ops.softmax(lo, axis=-1))) for lo in per_scale)
    assert float(ms.compute_loss(x, y, packed)) == pytest.approx(expected, rel=1e-5)
    assert ms(x).shape[-1] == 3  # inference: the merged prediction only


def test_one_training_step_lowers_the_loss():
    from kseg import losses

    _, ms = tiny_ms("hierarchical")
    ms.compile(keras.optimizers.Adam(1e-3), loss=losses.get("ce"))
    x, y = batch(64, n=4)

    def loss():
        return float(ms.compute_loss(x, y, ms(x, training=True)))

    before = loss()
    ms.train_on_batch(x, y)
    assert loss() < before


# One step of a multi-scale model (with its auxiliary losses) on one device and under MirroredStrategy on two
# logical CPUs (synchronised batch norm). Prints one JSON line.
MIRRORED = r"""
import json, sys
from kseg import distribute
devices = distribute.logical_cpus(2)
import keras
import numpy as np
import tensorflow as tf
sys.path.insert(0, "tests")
from conftest import batch
from kseg import losses, models

def run(strategy):
    keras.utils.set_random_seed(0)
    x, y = batch(64, n=4)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    if strategy is not None:
        data = distribute.shard_by_data(data)
    with distribute.scope(strategy):
        base = models.build("unet", backbone="plain", num_classes=3, input_shape=(None, None, 3),
                            decoder_filters=(16, 8, 8, 8), backbone_kwargs={"filters": (8, 8, 8, 16, 16)})
        ms = models.multiscale(base, "hierarchical", (0.5, 1.0), attention_filters=4, input_shape=(64, 64, 3))
        distribute.sync_batch_norm(ms, strategy)
        ms.compile(keras.optimizers.SGD(0.05), loss=distribute.replica_loss(losses.get("ce"), strategy))
        distribute.build_for_fit(ms, strategy, data)
    before = ms.get_weights()
    loss = ms.fit(data, epochs=1, verbose=0).history["loss"][0]
    return float(loss), before, ms.get_weights()

one, w0, w_one = run(None)
two, _, w_two = run(distribute.get_strategy("mirrored", devices=devices))
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w_one, w_two))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(w_one, w0))
print("RESULT " + json.dumps({"one": one, "two": two, "weight_diff": diff, "moved": moved}))
"""


def test_a_training_step_under_mirrored_strategy_equals_one_device(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    res = subprocess.run([sys.executable, "-c", MIRRORED], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert out["two"] == pytest.approx(out["one"], abs=1e-5)
    # the same step (gradients all-reduced over the replicas): the weights agree to float32 sums taken in
    # another order (the first convolution's gradient sums 0..255 inputs: up to about 1e-4), far below
    # what the step moved them
    assert out["weight_diff"] < 5e-4 and out["weight_diff"] < out["moved"] / 50


# --------------------------------------------------------------------------- saving and export


def test_save_and_load_give_the_same_outputs_and_scales(tmp_path):
    import kseg

    _, ms = tiny_ms("hierarchical")
    ms.compile("adam", loss="categorical_crossentropy")
    x, y = batch(64)
    ms.fit(x, y, epochs=1, verbose=0)
    ms.save(tmp_path / "ms.keras")
    loaded = kseg.load_model(tmp_path / "ms.keras")
    assert is_multiscale(loaded) and info(loaded) == {"mode": "hierarchical", "scales": [0.5, 1.0]}
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(ms(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(at_scales(loaded, (0.5, 1, 2))(x)),
                               np.asarray(at_scales(ms, (0.5, 1, 2))(x)), atol=1e-6)


def test_savedmodel_serves_the_keras_models_merged_prediction(tmp_path):
    import kseg
    from kseg.inference import Predictor
    from kseg.serving import export_saved_model

    _, ms = tiny_ms("attention")
    x, y = batch(64)
    ms.compile("adam", loss="categorical_crossentropy")
    ms.fit(x, y, epochs=1, verbose=0)  # moving statistics that differ from the initial ones
    export_saved_model(ms, tmp_path / "sm", tflite=False)
    served = kseg.load_model(tmp_path / "sm")
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    out = served.predict(image)
    np.testing.assert_allclose(out["probabilities"], Predictor(ms)(image), atol=2e-5)
    assert out["class_map"].shape == (70, 90)


def test_tflite_serves_the_merged_prediction(tmp_path):
    import tensorflow as tf

    import kseg
    from kseg.serving import TFLITE_NAME, export_saved_model

    _, ms = tiny_ms("hierarchical")
    export_saved_model(ms, tmp_path / "sm")
    runner = tf.lite.Interpreter(model_path=str(tmp_path / "sm" / TFLITE_NAME)).get_signature_runner()
    image = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    expected = kseg.load_model(tmp_path / "sm").predict(image)["probabilities"]
    np.testing.assert_allclose(runner(images=image)["probabilities"], expected, atol=2e-5)


@pytest.mark.parametrize("src,dst", [((64, 96), (32, 32)), ((32, 32), (64, 96)), ((40, 48), (40, 48))])
def test_the_backend_neutral_resize_matches_tensorflows(src, dst):
    import tensorflow as tf

    from kseg.models.multiscale_layers import _resize_matrix

    x = np.random.default_rng(0).normal(size=(2, *src, 3)).astype("float32")
    y = np.einsum("hi,niwc->nhwc", np.asarray(_resize_matrix(dst[0], src[0], "float32")), x)
    y = np.einsum("wj,nhjc->nhwc", np.asarray(_resize_matrix(dst[1], src[1], "float32")), y)
    np.testing.assert_allclose(y, tf.image.resize(x, dst, antialias=False).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("call,message", [
    (lambda ms: with_scales(ms, (0.5, 1.0, 2.0)), "bad --scales 0.5,1,2: this model's explicit attention gives one "
                                                  "map per trained scale; run it at 0.5,1"),
    (lambda ms: at_scales(ms, (1.0,)), "bad --scales 1: give at least two different positive scales"),
    (lambda ms: models.multiscale(tiny_base(), mode="pyramid"), "unknown multiscale mode 'pyramid'"),
    (lambda ms: models.multiscale(tiny_base(), train_scales=(1.0,)), "bad train_scales 1: give at least two"),
    (lambda ms: models.with_output_stride(ms, 8), "--output-stride: a multi-scale model (kseg train --multiscale) "
                                                  "runs at its trained stride"),
])
def test_errors_are_one_line(call, message):
    _, ms = tiny_ms("attention")
    with pytest.raises(KsegError, match="^" + re.escape(message)):
        call(ms)


def test_a_model_not_ending_in_an_activation_is_refused():
    from conftest import tiny_model

    with pytest.raises(KsegError, match="does not end in an Activation layer"):
        models.multiscale(tiny_model())


# --------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """kseg train --multiscale hierarchical: 8 tiny images, 64x64, one epoch."""
    from kseg import train

    root = make_tiny_iccv09(tmp_path_factory.mktemp("data") / "iccv09Data", n=8)
    out = tmp_path_factory.mktemp("run") / "ms"
    train.main(["--data", str(root), "--size", "64", "--epochs", "1", "--batch-size", "4", "--model", "unet",
                "--backbone", "plain", "--multiscale", "hierarchical", "--train-scales", "1,0.5", "--limit", "8",
                "--eval-scales", "0.5,1,2", "--out", str(out), "--no-tflite"])
    return root, out


def test_train_multiscale_writes_a_multiscale_model_and_its_export(trained_run):
    import kseg

    _, out = trained_run
    model = kseg.load_model(out / "best.keras")
    assert info(model) == {"mode": "hierarchical", "scales": [0.5, 1.0]}
    options = json.loads((out / "metrics.json").read_text())["options"]
    assert options["multiscale"] == "hierarchical" and options["train_scales"] == [0.5, 1.0]
    native = json.loads((out / "metrics.json").read_text())["native"]  # its attention over three scales
    assert native["scales"] == [0.5, 1.0, 2.0] and 0 <= native["miou"] <= 1
    assert (out / "saved_model" / "saved_model.pb").exists()


def test_predict_scales_and_attention_maps(trained_run, tmp_path, capsys):
    from PIL import Image

    from kseg import predict

    root, out = trained_run
    images = sorted((root / "images").iterdir())[:2]
    predict.main([*map(str, images), "--model", str(out / "best.keras"), "--out", str(tmp_path / "p"),
                  "--scales", "0.5,1,2", "--attention-maps"])
    maps = [np.asarray(Image.open(tmp_path / "p" / f"{images[0].stem}_attention_{s}.png"), float)
            for s in ("0.5", "1", "2")]
    assert maps[0].shape == (40, 48)
    np.testing.assert_allclose(sum(maps), 255, atol=3)  # the weights sum to 1 at each pixel (rounded)


def test_evaluate_reports_merged_and_per_scale_scores(trained_run, tmp_path, capsys):
    from kseg import evaluate

    root, out = trained_run
    evaluate.main(["--model", str(out / "best.keras"), "--data", str(root), "--scales", "0.5,1,2",
                   "--out", str(tmp_path / "e")])
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["scales"] == [0.5, 1.0, 2.0] and sorted(report["per_scale"]) == ["0.5", "1", "2"]
    assert "its attention over scales 0.5,1,2" in capsys.readouterr().out
    evaluate.main(["--model", str(out / "best.keras"), "--data", str(root), "--native", "--out", str(tmp_path / "n")])
    report = json.loads((tmp_path / "n" / "report.json").read_text())  # its trained scales
    assert report["scales"] == [0.5, 1.0] and sorted(report["per_scale"]) == ["0.5", "1"]


@pytest.mark.parametrize("args,message", [
    (["--scales", "0.5,1", "--merge", "max"], "--merge: a multi-scale model merges its --scales with its own"),
    (["--scales", "1", "--attention-maps"], "--attention-maps needs two or more --scales"),
])
def test_predict_errors_for_a_multiscale_model(trained_run, tmp_path, capsys, args, message):
    from kseg import predict

    root, out = trained_run
    image = str(sorted((root / "images").iterdir())[0])
    with pytest.raises(SystemExit) as exc:
        predict.main([image, "--model", str(out / "best.keras"), "--out", str(tmp_path / "p"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_export_scales_serves_the_attention_over_those_scales(trained_run, tmp_path, capsys):
    import kseg
    from kseg import export
    from kseg.inference import Predictor

    root, out = trained_run
    model = kseg.load_model(out / "best.keras")
    assert export.main(["--model", str(out / "best.keras"), "--out", str(tmp_path / "sm"), "--scales", "0.5,1,2",
                        "--no-tflite"]) == 0
    assert "kseg: exporting at scales 0.5,1,2" in capsys.readouterr().out
    from PIL import Image

    image = np.asarray(Image.open(sorted((root / "images").iterdir())[0]).convert("RGB"))
    served = kseg.load_model(tmp_path / "sm").predict(image)["probabilities"]
    np.testing.assert_allclose(served, Predictor(model, model_scales=(0.5, 1, 2))(image), atol=2e-5)
    assert np.abs(served - Predictor(model)(image)).max() > 1e-4  # not the trained scales' prediction


def test_export_scales_of_an_ordinary_model_is_refused(tmp_path, capsys):
    from kseg import export

    tiny_base().save(tmp_path / "m.keras")
    with pytest.raises(SystemExit) as exc:
        export.main(["--model", str(tmp_path / "m.keras"), "--out", str(tmp_path / "sm"), "--scales", "0.5,1"])
    assert exc.value.code == 2
    assert "m.keras: --scales is for a multi-scale model (kseg train --multiscale)" in capsys.readouterr().err
    assert not (tmp_path / "sm").exists()


def test_predict_attention_maps_of_an_ordinary_model_is_refused(tmp_path, capsys):
    from kseg import predict

    base = tiny_base()
    base.save(tmp_path / "m.keras")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    with pytest.raises(SystemExit) as exc:
        predict.main([str(image), "--model", str(tmp_path / "m.keras"), "--out", str(tmp_path / "p"),
                      "--attention-maps"])
    assert exc.value.code == 2
    assert "--attention-maps is for a multi-scale model (kseg train --multiscale)" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--multiscale", "pyramid"], "invalid choice: 'pyramid'"),
    (["--train-scales", "0.5,1"], "--train-scales is for a multi-scale model: add --multiscale"),
    (["--multiscale", "attention", "--train-scales", "1"], "bad --train-scales '1': give two or more different"),
    (["--multiscale", "attention", "--train-scales", "0.5,x"], "bad --train-scales '0.5,x'"),
    (["--multiscale", "attention", "--eval-output-stride", "8"], "--eval-output-stride: a multi-scale model"),
    (["--multiscale", "attention", "--eval-scales", "0.5,1,2"], "--eval-scales 0.5,1,2: explicit attention "
                                                                 "(--multiscale attention) runs at its --train-scales"),
])
def test_train_option_errors(args, message, capsys):
    from kseg import train

    with pytest.raises(SystemExit) as exc:
        train.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
