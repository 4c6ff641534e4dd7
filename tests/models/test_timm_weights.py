"""kseg.models.timm_weights: timm's HRNet checkpoints load into kseg's HRNet and compute what timm computes.

The reference (tests/fixtures/timm/): timm 1.0.31's ``hrnet_w18_small`` with a seeded random state dict
(:func:`random_state`, made the same in NumPy here and there) and its four branch outputs for a seeded
image, written by ``make_reference.py`` in a throwaway venv with timm and torch. Here the same state dict is
written as a ``.safetensors`` file with timm's names, loaded through ``encoder_weights=``, and kseg's branch
outputs are compared with timm's. Where such a venv exists (``$KSEG_TIMM_PYTHON``), one test also remakes the
reference live."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kseg import models
from kseg.errors import KsegError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timm"
sys.path.insert(0, str(FIXTURES))
from random_state import load_shapes, random_image, random_state  # noqa: E402

VARIANT = "hrnet_w18_small"


def _checkpoint(tmp_path, state=None, name="model.safetensors") -> Path:
    from safetensors.numpy import save_file

    path = tmp_path / name
    save_file(state if state is not None else random_state(load_shapes(VARIANT)), str(path))
    return path


def _branches(model):
    import keras

    ends = [model.get_layer(f"stage4_0_fuse_act_{i}").output for i in range(4)]
    return keras.Model(model.inputs, ends)([random_image()], training=False)


def test_timm_checkpoint_gives_timms_branch_outputs(tmp_path):
    model = models.build("hrnet", backbone=VARIANT, num_classes=3, input_shape=(64, 96, 3),
                         encoder_weights=str(_checkpoint(tmp_path)))
    reference = np.load(FIXTURES / f"{VARIANT}_features.npz")
    for i, got in enumerate(_branches(model)):
        want = reference[f"branch{i}"]
        assert got.shape == want.shape
        scale = float(np.abs(want).max())
        assert scale > 0.1  # a real signal, not a dead network
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * scale, rtol=1e-4)


def test_the_imagenet_head_in_a_checkpoint_is_skipped_and_every_weight_is_set(tmp_path):
    state = random_state(load_shapes(VARIANT))
    state["classifier.weight"] = np.zeros((1000, 2048), np.float32)
    state["incre_modules.0.0.conv1.weight"] = np.zeros((32, 16, 1, 1), np.float32)
    model = models.build("hrnet", backbone=VARIANT, num_classes=3, input_shape=(64, 64, 3),
                         encoder_weights=str(_checkpoint(tmp_path, state)))
    conv1 = model.get_layer("conv1").kernel.numpy()
    np.testing.assert_array_equal(conv1, state["conv1.weight"].transpose(2, 3, 1, 0))
    bn = model.get_layer("stage4_0_fuse_layers_0_2_1")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["stage4.0.fuse_layers.0.2.1.running_var"])


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("bn1.running_var"), "has no weights for bn1/moving_variance"),
    (lambda s: s.__setitem__("conv1.weight", np.zeros((32, 3, 3, 3), np.float32)),
     "conv1.weight has shape (3, 3, 3, 32), kseg's conv1/kernel (3, 3, 3, 64)"),
    (lambda s: s.__setitem__("decoder.conv.weight", np.zeros((1,), np.float32)),
     "decoder.conv.weight has no layer in the kseg model"),
])
def test_a_checkpoint_of_another_network_is_one_line_and_changes_nothing(tmp_path, change, message):
    state = random_state(load_shapes(VARIANT))
    change(state)
    path = _checkpoint(tmp_path, state)
    with pytest.raises(KsegError, match="^" + str(path).replace(".", r"\.") + ": ") as err:
        models.build("hrnet", backbone=VARIANT, num_classes=3, input_shape=(64, 64, 3), encoder_weights=str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_other_variant_missing_file_and_imagenet_are_one_line(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path)
    with pytest.raises(KsegError, match="another variant"):
        models.build("hrnet", backbone="hrnet_w18_small_v2", num_classes=3, input_shape=(64, 64, 3),
                     encoder_weights=str(path))
    with pytest.raises(KsegError, match="no such weights file"):
        models.build("hrnet", backbone=VARIANT, num_classes=3, encoder_weights=str(tmp_path / "none.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(KsegError, match="not a readable .safetensors file"):
        models.build("hrnet", backbone=VARIANT, num_classes=3, encoder_weights=str(tmp_path / "bad.safetensors"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: offline
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("KSEG_WEIGHTS_DIR", raising=False)
    with pytest.raises(KsegError, match=r"^cannot download the ImageNet weights of hrnet_w18_small .*"
                                        r"/timm/hrnet_w18_small\.ms_in1k/resolve/main/model\.safetensors"):
        models.build("hrnet", backbone=VARIANT, num_classes=3, encoder_weights="imagenet")


TIMM_PYTHON = os.environ.get("KSEG_TIMM_PYTHON", "/work/venv-timm-hrnet/bin/python")


@pytest.mark.skipif(not Path(TIMM_PYTHON).is_file(),
                    reason="no Python with timm and torch ($KSEG_TIMM_PYTHON): the pinned reference is used instead")
def test_the_pinned_reference_is_what_timm_computes_now(tmp_path):
    import shutil

    for name in ("random_state.py", "make_reference.py", f"{VARIANT}_shapes.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    subprocess.run([TIMM_PYTHON, str(tmp_path / "make_reference.py"), VARIANT], check=True, capture_output=True,
                   timeout=600)
    live, pinned = np.load(tmp_path / f"{VARIANT}_features.npz"), np.load(FIXTURES / f"{VARIANT}_features.npz")
    for key in pinned.files:
        np.testing.assert_allclose(live[key], pinned[key], rtol=1e-5, atol=1e-6)
