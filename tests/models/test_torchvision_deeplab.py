"""torchvision's DeepLabV3 (ResNet-50) in kseg: the converter against torchvision, and the preset
``deeplabv3-resnet50-voc`` offline.

The reference (tests/fixtures/torchvision_deeplab/): torchvision 0.29's ``deeplabv3_resnet50(num_classes=5,
aux_loss=True)`` with seeded random weights (tests/fixtures/timm/random_state.py) and its probabilities for a
seeded image, written by ``make_reference.py`` in a throwaway venv. The preset's download (a ``.pth`` in ``torch.save``'s
zip format, written without torch) is served by a file server on 127.0.0.1 (``$KSEG_TORCH_ENDPOINT``)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from kseg.errors import KsegError
from kseg.models import presets
from kseg.models.torchvision_deeplab import deeplabv3_resnet50, load_torchvision_deeplab

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES / "timm"))
sys.path.insert(0, str(FIXTURES.parent / "detection"))
from random_state import random_image, random_state  # noqa: E402
from torch_writer import write_torch_zip  # noqa: E402

SHAPES = json.loads((FIXTURES / "torchvision_deeplab" / "deeplabv3_resnet50_shapes.json").read_text())


def _save(state, path) -> Path:
    from safetensors.numpy import save_file

    save_file(state, str(path))
    return Path(path)


def test_a_torchvision_checkpoint_computes_what_torchvision_computes(tmp_path):
    model = deeplabv3_resnet50(5)
    load_torchvision_deeplab(model, _save(random_state(SHAPES), tmp_path / "deeplab.safetensors"))
    want = np.load(FIXTURES / "torchvision_deeplab" / "deeplabv3_resnet50_reference.npz")["probs"]
    got = np.asarray(model(random_image(), training=False))
    assert got.shape == want.shape == (1, 64, 96, 5)
    assert float(want.max(-1).mean()) > 0.5  # decisive probabilities: a live network
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_the_layers_are_torchvisions_and_a_wrong_file_changes_nothing(tmp_path):
    model = deeplabv3_resnet50(5)
    assert model.get_layer("layer4_2_conv2").dilation_rate == (4, 4)  # layer4 dilated x4 (output stride 8)
    assert model.get_layer("layer4_0_conv2").dilation_rate == (2, 2)  # its first block keeps layer3's rate
    assert model.get_layer("classifier_0_convs_3_0").dilation_rate == (36, 36)
    state = random_state(SHAPES)
    state.pop("classifier.2.running_var")
    path = _save(state, tmp_path / "bad.safetensors")
    before = model.get_layer("conv1").kernel.numpy().copy()
    with pytest.raises(KsegError, match=r"has no weights for classifier_2/moving_variance") as err:
        load_torchvision_deeplab(model, path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_the_voc_preset_downloads_once_checks_and_predicts_a_photo(tmp_path, monkeypatch):
    from PIL import Image

    from kseg.predict import main

    shapes = {k: ([21] + v[1:] if k.startswith(("classifier.4", "aux_classifier.4")) else v) for k, v in SHAPES.items()}
    write_torch_zip(tmp_path / "voc.pth", random_state(shapes))  # torch.save's format, written without torch
    data = (tmp_path / "voc.pth").read_bytes()
    root = tmp_path / "server"
    (root / "models").mkdir(parents=True)
    (root / "models" / "deeplabv3_resnet50_coco-cd0a2569.pth").write_bytes(data)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("KSEG_TORCH_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        monkeypatch.delenv("KSEG_WEIGHTS_DIR", raising=False)
        preset = presets.PRESETS["deeplabv3-resnet50-voc"]
        monkeypatch.setitem(presets.PRESETS, "deeplabv3-resnet50-voc",
                            dataclasses.replace(preset, sha256="0" * 8))  # another file's digits: refused
        with pytest.raises(KsegError, match="deeplabv3_resnet50_coco-cd0a2569.pth: sha256 .* is not the published 00000000"):
            presets.load_preset("deeplabv3-resnet50-voc")
        assert not list((tmp_path / "keras_home" / "models").iterdir())  # the wrong download is not kept
        monkeypatch.setitem(presets.PRESETS, "deeplabv3-resnet50-voc",
                            dataclasses.replace(preset, sha256=hashlib.sha256(data).hexdigest()[:8]))
        photo = tmp_path / "cat.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(photo)
        assert main(["--model", "deeplabv3-resnet50-voc", str(photo), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    finally:
        server.shutdown()
    assert np.asarray(Image.open(tmp_path / "out" / "cat.png")).shape[:2] == (60, 80)
    model, info = presets.load_preset("deeplabv3-resnet50-voc")  # from the Keras cache, the server is gone
    assert info["class_names"][15] == "person" and info["colors"][15] == [192, 128, 128]
    assert model.outputs[0].shape[-1] == 21


TORCH_PYTHON = __import__("os").environ.get("KSEG_TIMM_PYTHON", "/work/venv-timm-hrnet/bin/python")


@pytest.mark.skipif(not Path(TORCH_PYTHON).is_file(),
                    reason="no Python with torchvision ($KSEG_TIMM_PYTHON): the pinned reference is used instead")
def test_the_pinned_reference_is_what_torchvision_computes_now(tmp_path):
    import shutil
    import subprocess

    shutil.copytree(FIXTURES / "timm", tmp_path / "timm")
    (tmp_path / "torchvision_deeplab").mkdir()
    shutil.copy(FIXTURES / "torchvision_deeplab" / "make_reference.py", tmp_path / "torchvision_deeplab")
    subprocess.run([TORCH_PYTHON, str(tmp_path / "torchvision_deeplab" / "make_reference.py")], check=True,
                   capture_output=True, timeout=600)
    live = np.load(tmp_path / "torchvision_deeplab" / "deeplabv3_resnet50_reference.npz")
    pinned = np.load(FIXTURES / "torchvision_deeplab" / "deeplabv3_resnet50_reference.npz")
    for key in pinned.files:
        np.testing.assert_allclose(live[key], pinned[key], rtol=1e-5, atol=1e-6)
