"""kseg.training as a library: TrainConfig (defaults, checks, resolution), the callbacks and the sparse-target
loss as real classes, and kseg.train's command over it."""

from __future__ import annotations

import argparse
import dataclasses
import csv
import json

import numpy as np
import pytest

from kseg import train
from kseg.errors import KsegError
from kseg.training import TrainConfig


# --------------------------------------------------------------------------- TrainConfig

def test_config_defaults_are_the_command_lines():
    config = TrainConfig()
    assert train.parse_config([]) == config
    assert config.as_dict() == train.run_options(train.parse_args([]))
    assert (config.model, config.backbone, config.epochs, config.batch_size, config.lr) == (
        "unet", "resnet34", 20, 16, 1e-3)
    # resolved: the size, the ignore index, the default output folder
    assert config.size == (224, 224) and config.ignore_index == 255
    assert config.out == "runs/surfaces-unet-resnet34"
    assert TrainConfig(data_format="folder", data="d", ignore_index="none").out == "runs/folder-unet-resnet34"


def test_config_resolves_once_and_for_all():
    config = TrainConfig(size="64x96", eval_scales="0.75,1", encoder_weights="none", ignore_index="255")
    assert config.size == (64, 96) and config.eval_scales == (0.75, 1.0) and config.encoder_weights is None
    assert TrainConfig(**vars(config)) == config  # a resolved config resolves to itself
    assert dataclasses.replace(config, epochs=3).size == (64, 96)


def test_config_as_dict_is_json_ready_and_sorted():
    options = TrainConfig(size="64", eval_scales="1,1.25").as_dict()
    assert list(options) == sorted(options)
    assert options["size"] == [64, 64] and options["eval_scales"] == [1.0, 1.25]
    assert json.loads(json.dumps(options)) == options


def test_config_from_recipe_and_options_over_it():
    config = TrainConfig.from_recipe("regions-mobilenetv2", epochs=2, size="128")
    assert config.recipe == "regions-mobilenetv2" and config.mask == "regions" and config.epochs == 2
    assert config.size == (128, 128) and config.schedule == "cosine"
    assert config == train.parse_config(["--recipe", "regions-mobilenetv2", "--epochs", "2", "--size", "128"])
    with pytest.raises(KsegError, match="unknown --recipe 'nope'"):
        TrainConfig.from_recipe("nope")


def test_config_from_args_refuses_what_is_no_option():
    args = train.parse_args(["--epochs", "3"])
    assert TrainConfig.from_args(args).epochs == 3
    args.epochz = 4
    with pytest.raises(TypeError, match="not options of kseg.train: epochz"):
        TrainConfig.from_args(args)


@pytest.mark.parametrize("options,message", [
    (dict(optimizer="rmsprop"), "unknown --optimizer 'rmsprop': choose one of adam, adamw, sgd"),
    (dict(schedule="step"), "unknown --schedule 'step': choose one of constant, cosine, poly"),
    (dict(jit_compile="yes"), "unknown --jit-compile 'yes': choose one of auto, on, off"),
    (dict(data_format="coco"), "unknown --data-format 'coco': choose one of iccv09, folder"),
    (dict(precision="float16"), "unknown --precision 'float16': choose one of float32, mixed_bfloat16"),
    (dict(fold=5), "unknown --fold 5: choose one of 0, 1, 2, 3, 4"),
    (dict(eval_output_stride=4), "unknown --eval-output-stride 4: choose one of 8, 16, 32"),
    (dict(mask="layers"), "unknown --mask 'layers'"),
    (dict(strategy="gpu"), "unknown --strategy 'gpu'"),
    (dict(epochs=0), "bad --epochs 0"),
    (dict(lr=float("nan")), "bad --lr nan"),
    (dict(threshold=1.0), "bad --threshold 1.0"),
    (dict(weight_decay=0.1), "--weight-decay needs --optimizer adamw or sgd"),
    (dict(data_format="folder"), "--data-format folder needs --data"),
    (dict(classes="a,b", ignore_index=0), "--classes, --ignore-index: for your own data"),
    (dict(data_format="folder", data="d", ignore_index=70000), "bad --ignore-index 70000"),
    (dict(size=100), "size 100 is not a multiple of 32"),
    (dict(augment="rotate"), "unknown augmentation 'rotate'"),
])
def test_config_checks_name_the_option(options, message):
    with pytest.raises(KsegError) as err:
        TrainConfig(**options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_several_bad_options_report_the_first_as_the_command_line_checks_them():
    with pytest.raises(KsegError, match="bad --epochs 0"):
        TrainConfig(epochs=0, lr=0.0, ema=2.0)
    with pytest.raises(KsegError, match="bad --ema 2.0"):
        TrainConfig(ema=2.0, threshold=2.0)


def test_config_warnings():
    assert TrainConfig(freeze_encoder_bn=True).warnings() == [
        "kseg: warning: --freeze-encoder-bn without pretrained encoder weights keeps the encoder's BatchNorm "
        "layers at their initial statistics (no normalisation)"]
    assert TrainConfig(freeze_encoder_bn=True, encoder_weights="imagenet").warnings() == []
    assert TrainConfig().warnings() == []


# --------------------------------------------------------------------------- the command over the library

def test_train_run_passes_a_config_to_the_library(monkeypatch):
    import kseg.training

    seen = []
    monkeypatch.setattr(kseg.training, "fit", lambda config: seen.append(config) or {"miou": 0.5})
    args = train.parse_args(["--epochs", "2", "--size", "64"])
    assert train.run(args) == {"miou": 0.5}
    assert seen == [TrainConfig(epochs=2, size="64")]
    assert train.run(seen[0]) == {"miou": 0.5} and seen[1] is seen[0]


def test_train_validate_resolves_a_namespace_in_place():
    args = argparse.Namespace(**{**train.DEFAULTS, "size": "64x96", "ignore_index": "255"})
    assert train.validate(args) is args
    assert args.size == (64, 96) and args.ignore_index == 255 and args.out == "runs/surfaces-unet-resnet34"


def test_the_names_kseg_train_offered_are_still_there():
    from kseg.training import callbacks, model, report, resume

    assert train.Unfreeze is callbacks.Unfreeze and train.RunRecorder is callbacks.RunRecorder
    assert train.read_resume_state is resume.read_resume_state and train._read_history is resume.read_history
    assert train.class_weights is model.class_weights and train.evaluate_to_json is report.evaluate_to_json
    for name in train._MOVED:
        assert getattr(train, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        train.nope  # noqa: B018


# --------------------------------------------------------------------------- callbacks and the sparse loss

def _tiny_compiled():
    import keras

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="enc"), keras.layers.Dense(1, name="dec")])
    m.compile("adam", "mse")
    return m


def test_callbacks_are_keras_callbacks(tmp_path):
    import keras

    from kseg.training.callbacks import CurvesCallback, ResumeState, RunRecorder, Unfreeze

    rec = RunRecorder(tmp_path / "history.csv", [], tmp_path / "best.keras", "val_loss")
    made = [Unfreeze([], at=1), rec, ResumeState(tmp_path / ".backup", {}, rec),
            CurvesCallback(tmp_path / "history.csv", tmp_path / "curves.png")]
    for cb, cls in zip(made, (Unfreeze, RunRecorder, ResumeState, CurvesCallback)):
        assert isinstance(cb, cls) and isinstance(cb, keras.callbacks.Callback)


def test_unfreeze_thaws_the_encoder_at_its_epoch(capsys):
    from kseg.training.callbacks import Unfreeze

    m = _tiny_compiled()
    enc = m.get_layer("enc")
    enc.trainable = False
    cb = Unfreeze([enc], at=2)
    cb.set_model(m)
    cb.on_epoch_begin(1)
    assert not enc.trainable and capsys.readouterr().out == ""
    cb.on_epoch_begin(2)
    assert enc.trainable and capsys.readouterr().out == "\nkseg: epoch 3: the encoder is unfrozen\n"
    cb.on_epoch_begin(3)
    assert capsys.readouterr().out == ""  # once


def test_run_recorder_keeps_the_best_by_the_monitors_direction(tmp_path):
    from kseg.training.callbacks import RunRecorder

    m = _tiny_compiled()
    rec = RunRecorder(tmp_path / "history.csv", [], tmp_path / "best.keras", "val_miou")
    rec.set_model(m)
    for epoch, miou in enumerate([0.2, 0.5, 0.4]):
        rec.on_epoch_end(epoch, {"loss": 1.0, "val_miou": miou})
    assert (rec.best, rec.best_epoch, rec.last_good_epoch) == (0.5, 1, 2)
    assert (tmp_path / "best.keras").exists()
    with pytest.raises(KsegError, match=r"bad --monitor 'val_iou': choose one of loss, val_miou"):
        RunRecorder(tmp_path / "h.csv", [], tmp_path / "b.keras", "val_iou").on_epoch_end(0, {"loss": 1.0,
                                                                                                "val_miou": 0.1})


def test_curves_callback_warns_and_goes_on_when_it_cannot_draw(tmp_path, capsys):
    from kseg.training.callbacks import CurvesCallback

    CurvesCallback(tmp_path / "missing.csv", tmp_path / "curves.png").on_epoch_end(0)
    err = capsys.readouterr().err
    assert err.startswith(f"kseg: warning: {tmp_path / 'curves.png'}: cannot draw curves (")
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("channel", [False, True])
def test_sparse_adapter_is_the_one_hot_loss_with_255_ignored(channel):
    import keras

    from kseg import losses
    from kseg.training.callbacks import SparseAdapter

    ce = losses.get("ce")
    sparse = SparseAdapter(ce, 3)
    assert isinstance(sparse, SparseAdapter) and isinstance(sparse, keras.losses.Loss) and sparse.name == ce.name
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(2, 4, 4)).astype("float32")
    labels = rng.integers(0, 3, (2, 4, 4))
    labels[0, 0, :] = 255
    one_hot = np.eye(3, dtype="float32")[np.where(labels == 255, 0, labels)]
    one_hot[labels == 255] = 0.0  # an ignored pixel: an all-zero row
    y = labels[..., None] if channel else labels
    got = float(sparse(y.astype("float32"), probs))
    np.testing.assert_allclose(got, float(ce(one_hot, probs)), rtol=1e-6)
    changed = probs.copy()
    changed[0, 0, :] = [1.0, 0.0, 0.0]  # the ignored pixels' predictions do not count
    np.testing.assert_allclose(float(sparse(y.astype("float32"), changed)), got, rtol=1e-6)


def test_default_backbones_agree_with_the_model_registry():
    from kseg import models
    from kseg.training.config import DEFAULT_BACKBONES

    for name in models.list_models():
        assert DEFAULT_BACKBONES.get(name, "resnet34") == models.default_backbone(name), name


def test_early_stop_ends_the_run_and_tensorboard_logs_it(tiny_iccv09, tmp_path, monkeypatch, capsys):
    """--early-stop 1 on a monitored value that only worsens after epoch 1: the run stops after epoch 2 (of 5),
    is finished (run.json) with the first epoch's best.keras; --tensorboard writes event files."""
    import keras

    class Worsen(keras.callbacks.Callback):  # runs first: every later callback sees the worsening val_loss
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = 1.0 + epoch

    fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fit(
        self, *a, **{**k, "callbacks": [Worsen()] + list(k["callbacks"])}))
    out, tb = tmp_path / "run", tmp_path / "tb"
    assert train.main(["--data", str(tiny_iccv09), "--out", str(out), "--size", "32", "--epochs", "5",
                       "--batch-size", "3", "--model", "unet", "--backbone", "plain", "--no-export", "--verbose", "0",
                       "--early-stop", "1", "--tensorboard", str(tb)]) == 0
    with open(out / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]
    assert json.loads((out / "run.json").read_text())["finished"] is True
    assert list(tb.rglob("events.out.tfevents.*")), "no TensorBoard event files"
    with pytest.raises(SystemExit):
        train.main(["--early-stop", "0", "--out", str(tmp_path / "x")])
    assert "bad --early-stop 0: give a number of epochs without improvement" in capsys.readouterr().err


def test_curves_are_redrawn_at_most_every_few_seconds_and_when_training_ends(tmp_path, monkeypatch):
    from kseg.training import callbacks

    drawn = []
    monkeypatch.setattr("kseg.viz.plot_history", lambda csv, png: drawn.append(png))
    clock = iter([0.0, 5.0, 30.0, 30.0, 31.0, 31.0])  # each check, then each drawing
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: next(clock))
    cb = callbacks.CurvesCallback(tmp_path / "history.csv", tmp_path / "curves.png", every=20)
    cb.on_epoch_end(0)  # t=0: the first epoch is drawn
    cb.on_epoch_end(1)  # t=5: too soon
    cb.on_epoch_end(2)  # t=30: drawn
    assert len(drawn) == 2
    cb.on_epoch_end(3)  # t=31: too soon, so training's end draws it
    cb.on_train_end()
    assert len(drawn) == 3
    cb.on_train_end()  # nothing new since
    assert len(drawn) == 3
