"""python -m kseg.train: end to end on a few real images, outputs, SavedModel parity, user errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, write_label
from kseg import train


def _run_cli(args, cwd=REPO, env=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kseg.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(real_iccv09, tmp_path_factory):
    """One short real run of the CLI: 12 real images, 64x64, one epoch."""
    out = tmp_path_factory.mktemp("run") / "out"
    cache = tmp_path_factory.mktemp("cache")
    res = _run_cli(["--data", str(real_iccv09), "--mask", "surfaces", "--size", "64", "--epochs", "1",
                    "--batch-size", "4", "--out", str(out), "--seed", "1"], env={"KSEG_CACHE_DIR": str(cache)})
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


@pytest.mark.e2e
def test_cli_writes_every_output(trained):
    out, res = trained
    for name in ("best.keras", "history.csv", "curves.png", "predictions.png", "metrics.json", "saved_model"):
        assert (out / name).exists(), name
    assert not (out / ".backup").exists()  # a finished run leaves no resume state behind
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"loss", "val_loss", "miou", "val_pixel_accuracy"} <= set(rows[0])
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["iou"]) == {"sky", "horizontal", "vertical"}
    assert 0.0 <= report["pixel_accuracy"] <= 1.0
    # the report's numbers follow from its own confusion matrix
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == report["pixels"] > 0
    assert report["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert "validation pixel accuracy" in res.stdout


@pytest.mark.e2e
def test_metrics_json_matches_the_saved_model_on_the_validation_images(trained, real_iccv09):
    """metrics.json is recomputed here independently: nearest-resized labels, -1 ignored."""
    import cv2

    from kseg.data import load_iccv09, split_indices
    from kseg.export import load_model

    out, _ = trained
    report = json.loads((out / "metrics.json").read_text())
    model = load_model(out / "best.keras")
    ds = load_iccv09(real_iccv09, mask="surfaces")
    _, val_idx = split_indices(len(ds), 0.2, seed=1)
    cm = np.zeros((3, 3), np.int64)
    for i in val_idx:
        img = cv2.cvtColor(cv2.imread(ds.image_paths[i]), cv2.COLOR_BGR2RGB).astype(np.float32)
        img = cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(ds.labels[i].astype(np.int16), (64, 64), interpolation=cv2.INTER_NEAREST)
        pred = model.predict(img[None], verbose=0)[0].argmax(-1)
        ok = lab >= 0
        np.add.at(cm, (lab[ok], pred[ok]), 1)
    assert cm.sum() == report["pixels"]
    # cv2's and TF's resizers differ by a hair at the borders; predictions may flip there
    assert abs(np.trace(cm) / cm.sum() - report["pixel_accuracy"]) < 0.02


@pytest.mark.e2e
def test_saved_model_gives_the_keras_models_predictions(trained):
    import tensorflow as tf

    from kseg.export import load_model
    from kseg.models.layers import fold_batch_norm

    out, _ = trained
    keras_model = load_model(out / "best.keras")
    loaded = tf.saved_model.load(str(out / "saved_model"))
    fn = loaded.signatures["serving_default"]
    spec = list(fn.structured_input_signature[1].values())[0]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    result = fn(tf.constant(images, dtype=spec.dtype))
    probs = result["probabilities"] if "probabilities" in result else list(result.values())[0]
    # the export serves best.keras with its batch norms folded into the convolutions: the same function
    # to float32 rounding, which moves a probability near a tie by up to ~1e-3 (seen: 9.7e-4 on 4 of
    # 24,576 values); a wrong fold or wrong weights would differ by ~0.1
    folded = fold_batch_norm(keras_model).predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(probs.numpy(), folded, atol=1e-4)
    expected = keras_model.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(probs.numpy(), expected, atol=3e-3)
    assert (probs.numpy().argmax(-1) != expected.argmax(-1)).mean() < 1e-3


@pytest.mark.parametrize("extra", [[], ["--freeze-epochs", "1", "--optimizer", "adamw", "--ema", "0.5"]])
def test_resume_after_interruption_continues_the_history(tiny_iccv09, tmp_path, extra):
    """A run stopped after epoch 1 of 2 resumes at epoch 2 when the same command runs again, with the
    optimizer's whole state (with --freeze-epochs: its per-variable steps too; with --ema: the averages)."""
    import warnings

    import keras

    out = tmp_path / "out"
    args = ["--data", str(tiny_iccv09), "--size", "32", "--epochs", "2", "--batch-size", "3",
            "--backbone", "resnet18", "--out", str(out), "--no-export", "--verbose", "0", *extra]

    class Stop(Exception):
        pass

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise Stop()

    original_fit = keras.Model.fit

    def interrupted_fit(self, *a, **k):
        k["callbacks"] = list(k.get("callbacks", [])) + [StopAfterFirstEpoch()]
        return original_fit(self, *a, **k)

    keras.Model.fit = interrupted_fit
    try:
        with pytest.raises(Stop):
            train.main(args)
    finally:
        keras.Model.fit = original_fit
    assert (out / ".backup").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.main(args)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    with open(out / "history.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == [0, 1]
    assert not (out / ".backup").exists()


@pytest.mark.parametrize("args,message", [
    (["--mask", "layers"], "unknown --mask 'layers'"),
    (["--size", "100"], "size 100 is not a multiple of 32: use 96 or 128"),
    (["--epochs", "0"], "bad --epochs 0"),
    (["--batch-size", "-1"], "bad --batch-size -1"),
    (["--val-split", "1.5"], "bad --val-split 1.5"),
    (["--ema", "1.5"], "bad --ema 1.5: give a momentum between 0 and 1"),
    (["--repeat-threshold", "-0.5"], "bad --repeat-threshold -0.5: give 0 (off) or a fraction of images"),
    (["--data", "/nonexistent/iccv"], "/nonexistent/iccv: no such file or folder"),
    (["--encoder-lr-mult", "0"], "bad --encoder-lr-mult 0.0: give a positive number"),
    (["--encoder-lr-mult", "0.1", "--encoder-freeze"], "--encoder-freeze does not train it"),
])
def test_user_errors_print_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kseg: error: ") and message in err[0]


def test_bad_label_file_is_named_by_the_cli(tiny_iccv09, tmp_path, capsys):
    write_label(tiny_iccv09 / "labels" / "0000004.surfaces.txt", np.full((40, 48), 9))
    with pytest.raises(SystemExit) as exc:
        train.main(["--data", str(tiny_iccv09), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "0000004.surfaces.txt: label value 9 is outside the 3 classes" in err


def test_cli_error_from_a_real_process_has_no_traceback(tmp_path):
    res = _run_cli(["--size", "250", "--out", str(tmp_path / "o")])
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "kseg: error: size 250 is not a multiple of 32: use 224 or 256"


def test_ema_validates_and_checkpoints_the_averaged_weights_and_resumes_from_the_trained_ones(tmp_path):
    """With --ema's callbacks (Keras's SwapEMAWeights before kseg's recorder and resume state): the logged
    val_loss is the averaged weights', best.keras holds the averaged weights, and the resume file holds the
    trained weights, with the average in the optimizer's state."""
    import keras

    from kseg import optimizers

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")

    def model():
        keras.utils.set_random_seed(1)
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
        m.compile(optimizers.Adam(0.05, use_ema=True, ema_momentum=0.8), loss="mse")
        return m

    m = model()
    swap = keras.callbacks.SwapEMAWeights()
    rec = train.RunRecorder(tmp_path / "history.csv", [], tmp_path / "best.keras", "val_loss", ema=swap)
    state = train.ResumeState(tmp_path / "backup", {}, rec)
    hist = m.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), callbacks=[swap, rec, state], verbose=0)
    averaged = m.get_weights()  # Keras ends fit by writing the averages into the model
    np.testing.assert_allclose(hist.history["val_loss"][0], m.evaluate(x, y, verbose=0), rtol=1e-5)
    best = keras.saving.load_model(tmp_path / "best.keras")
    for a, b in zip(best.get_weights(), averaged):
        np.testing.assert_allclose(a, b, atol=1e-6)

    resumed = model()
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(tmp_path / "backup" / "epoch-1.weights.h5")
    trained = resumed.get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(trained, averaged)) > 1e-3  # not the averages
    assert float(resumed.evaluate(x, y, verbose=0)) < float(model().evaluate(x, y, verbose=0))  # but trained
    for avg, b in zip(resumed.optimizer._model_variables_moving_average, averaged):
        np.testing.assert_allclose(np.asarray(avg), b, atol=1e-6)  # the average travels in the optimizer


def test_repeat_summary_names_the_repeated_classes():
    from kseg.data.pipeline import class_repeat_factors, image_repeat_factors

    labels = [np.array([[0, 1]]), np.array([[0, 0]]), np.array([[0, -1]]), np.array([[0, 2]])]

    def summary(threshold):
        present, per_class = class_repeat_factors(labels, 3, threshold)
        factors = image_repeat_factors(present, per_class)
        return train.repeat_summary(("a", "b", "c"), per_class, present.sum(0), factors)

    assert summary(1.0) == "b x2.00 (1 images), c x2.00 (1 images); mean image factor 1.50"  # sqrt(1/0.25) = 2
    assert summary(0.2).startswith("no class is rarer than the threshold")


@pytest.mark.parametrize("keep_bn_frozen", [False, True])
def test_encoder_lr_multipliers_name_the_encoders_trainable_variables(keep_bn_frozen):
    from kseg import models

    model = models.build("unet", backbone="resnet18", num_classes=3, input_shape=(32, 32, 3), encoder_freeze=True)
    encoder = [la for la in model.layers if not la.trainable]
    assert train.encoder_lr_multipliers(encoder, 1.0) == {}
    got = train.encoder_lr_multipliers(encoder, 0.1, keep_bn_frozen)
    assert all(not la.trainable for la in encoder)  # left frozen as found
    assert set(got.values()) == {0.1}
    decoder_paths = {v.path for v in model.trainable_weights}  # the encoder is frozen: the decoder's alone
    assert got and not set(got) & decoder_paths
    encoder_paths = {v.path for la in encoder for v in la.weights}
    assert set(got) <= encoder_paths
    assert not any(p.endswith(("moving_mean", "moving_variance")) for p in got)
    bn_params = {p for p in got if p.endswith(("gamma", "beta"))}
    assert (not bn_params) if keep_bn_frozen else bn_params
    kernels = {v.path for la in encoder for v in la.weights if v.path.endswith("kernel")}
    assert kernels and kernels <= set(got)
    train.thaw_encoder(encoder, keep_bn_frozen)  # as the run thaws it: then exactly these train beside the decoder
    assert set(got) | decoder_paths == {v.path for v in model.trainable_weights}


def test_encoder_lr_mult_reaches_the_runs_optimizer(tiny_iccv09, tmp_path, capsys, run_model):
    out = tmp_path / "out"
    seen = run_model
    train.main(["--data", str(tiny_iccv09), "--size", "32", "--epochs", "2", "--batch-size", "3",
                "--backbone", "resnet18", "--freeze-epochs", "1", "--encoder-lr-mult", "0.1", "--out", str(out),
                "--no-export", "--verbose", "0"])
    printed = capsys.readouterr().out
    factors = seen["model"].optimizer.lr_multipliers
    assert factors and set(factors.values()) == {0.1}
    assert f"kseg: encoder learning rate x0.1 ({len(factors)} variables)" in printed
    kernels = [v.path for v in seen["model"].weights if v.path.endswith("kernel")]
    assert kernels[0] in factors and kernels[-1] not in factors  # the encoder's first convolution, the head's last
    assert json.loads((out / "metrics.json").read_text())["options"]["encoder_lr_mult"] == 0.1


def test_best_keras_holds_the_model_for_inference_and_no_optimizer_state(tiny_iccv09, tmp_path):
    """best.keras is the model and its weights, uncompiled: no optimizer state (that is the resume state's), no
    loss or metrics; saved while --freeze-epochs keeps the encoder frozen, it is saved thawed, so the loaded
    model fine-tunes as a whole."""
    import zipfile

    import keras

    out = tmp_path / "out"
    train.main(["--data", str(tiny_iccv09), "--size", "32", "--epochs", "1", "--batch-size", "3",
                "--backbone", "resnet18", "--freeze-epochs", "2", "--out", str(out), "--no-export",
                "--verbose", "0"])
    best = keras.saving.load_model(out / "best.keras")
    assert getattr(best, "optimizer", None) is None and not best.compiled
    assert all(la.trainable for la in best.layers)
    with zipfile.ZipFile(out / "best.keras") as z:
        config = json.loads(z.read("config.json"))
    assert not config.get("compile_config")
    compiled = tmp_path / "compiled.keras"
    best.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy")
    best.optimizer.build(best.trainable_variables)
    best.save(compiled)
    assert (out / "best.keras").stat().st_size < 0.5 * compiled.stat().st_size

