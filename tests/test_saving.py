"""kseg.load_model / kseg.saving, and what ``import kseg`` registers for ``keras.saving.load_model``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import kseg
from kseg.errors import KsegError
from kseg.export import export_saved_model
from kseg.saving import ExportedModel

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _tiny(num_classes=3, activation="softmax"):
    return kseg.models.build("unet", backbone="plain", num_classes=num_classes, activation=activation,
                             input_shape=(32, 32, 3), backbone_kwargs={"filters": (4, 8, 8, 8, 8)},
                             decoder_filters=(8, 8, 8, 4))


@pytest.fixture(scope="module")
def compiled_model(tmp_path_factory):
    """A tiny model compiled with kseg's loss, metric, optimizer and schedule, trained one step and saved."""
    path = tmp_path_factory.mktemp("compiled") / "best.keras"
    keras.utils.set_random_seed(0)
    model = _tiny()
    schedule = kseg.schedules.WarmupDecay(1e-3, total_steps=10, warmup_steps=2)
    model.compile(optimizer=kseg.optimizers.Adam(learning_rate=schedule), loss=kseg.losses.get("ce"),
                  metrics=[kseg.metrics.MeanIoU(num_classes=3)])
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[np.random.default_rng(1).integers(0, 3, (2, 32, 32))]
    model.train_on_batch(x, y)
    model.save(path)
    return path


def test_import_kseg_registers_what_a_compiled_model_names(compiled_model):
    """Without kseg, Keras cannot read the file; after a bare ``import kseg`` it can, compiled, and kseg's
    submodules are attributes. ``import kseg`` leaves the environment as TensorFlow left it."""
    probe = textwrap.dedent(f"""
        import os, sys
        import keras  # TensorFlow and Keras set a few variables of their own
        before = dict(os.environ)
        try:
            keras.saving.load_model({str(compiled_model)!r})
            print("loaded without kseg")
        except Exception as err:
            print("without kseg:", type(err).__name__, str(err).splitlines()[0])
        import kseg
        print("environment unchanged:", dict(os.environ) == before)
        model = keras.saving.load_model({str(compiled_model)!r})
        print("optimizer:", type(model.optimizer).__module__, type(model.optimizer).__name__)
        print("schedule:", type(model.optimizer.learning_rate).__name__ if not hasattr(model.optimizer, "_learning_rate")
              else type(model.optimizer._learning_rate).__name__)
        print("loss:", type(model.loss).__module__)
        print("attributes:", kseg.losses.get("ce").__class__.__name__, kseg.metrics.__name__, kseg.models.__name__,
              kseg.data.__name__, kseg.optimizers.__name__, kseg.saving.__name__, kseg.sm.__name__)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("without kseg: TypeError"), lines  # Keras alone cannot read it
    assert lines[1:] == [
        "environment unchanged: True",
        "optimizer: kseg.optimizers Adam",
        "schedule: WarmupDecay",
        "loss: kseg.losses",
        "attributes: CategoricalCrossentropy kseg.metrics kseg.models kseg.data kseg.optimizers kseg.saving kseg.sm",
    ]


def test_load_model_reads_a_keras_file_and_a_run_folder(compiled_model):
    for path in (compiled_model, compiled_model.parent):
        model = kseg.load_model(path)
        assert isinstance(model, keras.Model)
        assert model.output_shape == (None, 32, 32, 3)
        assert {w.dtype for w in model.weights} == {"float32"}
        assert getattr(model, "optimizer", None) is None  # not compiled: for evaluation, prediction and export


def test_kseg_export_load_model_is_still_there(compiled_model):
    from kseg.export import load_model

    assert isinstance(load_model(compiled_model), keras.Model)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """SavedModels of a tiny 3-class and a tiny binary model, with their Keras models."""
    root = tmp_path_factory.mktemp("exported")
    keras.utils.set_random_seed(0)
    multi, binary = _tiny(), _tiny(1, "sigmoid")
    return {"multi": (multi, export_saved_model(multi, root / "multi", tflite=False)),
            "binary": (binary, export_saved_model(binary, root / "binary", tflite=False))}


def test_load_model_serves_a_saved_model(exported):
    model, path = exported["multi"]
    served = kseg.load_model(path)
    assert isinstance(served, ExportedModel)
    assert (served.num_classes, served.binary, served.outputs) == (3, False, ("class_map", "probabilities"))
    assert repr(served) == f"ExportedModel({str(path)!r}, 3 classes, outputs=['class_map', 'probabilities'])"
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    out = served.predict(images)
    assert out["probabilities"].shape == (2, 32, 32, 3) and out["probabilities"].dtype == np.float32
    assert out["class_map"].shape == (2, 32, 32) and out["class_map"].dtype == np.int32
    np.testing.assert_allclose(out["probabilities"], model.predict(images.astype("float32"), verbose=0), atol=1e-4)
    one = served.predict(images[0].astype(np.float64))  # one float image in 0..255: no batch axis back
    assert one["probabilities"].shape == (32, 32, 3)
    np.testing.assert_allclose(one["probabilities"], out["probabilities"][0], atol=1e-5)
    other_size = served.predict(images[:, :20, :27])
    assert other_size["class_map"].shape == (2, 20, 27)


def test_load_model_serves_a_binary_saved_model(exported):
    _, path = exported["binary"]
    served = kseg.load_model(path)
    assert (served.num_classes, served.binary, served.outputs) == (1, True, ("mask", "probabilities"))
    out = served.predict(np.zeros((32, 32, 3), np.uint8))
    assert out["probabilities"].shape == (32, 32, 1) and out["mask"].shape == (32, 32)
    assert out["mask"].dtype == np.uint8
    np.testing.assert_array_equal(out["mask"], out["probabilities"][..., 0] >= 0.5)


def test_predict_refuses_images_that_are_not_rgb(exported):
    _, path = exported["multi"]
    with pytest.raises(KsegError, match=r"^.*multi: predict takes RGB images \(H, W, 3\) or \(N, H, W, 3\), "
                                        r"got shape \(1, 32, 32, 1\)$"):
        kseg.load_model(path).predict(np.zeros((32, 32, 1), np.uint8))


def test_bad_paths_are_one_line_naming_the_path(tmp_path):
    cases = [
        (tmp_path / "missing.keras", f"{tmp_path / 'missing.keras'}: no such model file or folder"),
        (tmp_path, f"{tmp_path}: neither a SavedModel folder (no saved_model.pb) nor a run folder (no best.keras)"),
    ]
    for path, message in cases:
        with pytest.raises(KsegError) as err:
            kseg.load_model(path)
        assert str(err.value) == message
    garbage = tmp_path / "notes.keras"
    garbage.write_text("not a model")
    with pytest.raises(KsegError) as err:
        kseg.load_model(garbage)
    assert str(err.value).startswith(f"{garbage}: not a loadable Keras model (")
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(KsegError) as err:
        kseg.load_model(broken)
    assert str(err.value).startswith(f"{broken}: cannot load the SavedModel (")
    assert "\n" not in str(err.value)
