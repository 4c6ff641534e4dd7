"""Hugging Face SegFormer / MiT checkpoints in kseg: the converter against transformers, ImageNet MiT and HRNet
downloads, and the pretrained segmenters (``segformer-b0-ade20k`` ...), all offline.

The reference (tests/fixtures/hf_segformer/): transformers 5.25's ``SegformerForSemanticSegmentation`` (MiT-B0,
5 classes) loading a checkpoint in the hub's names with seeded random values (the NumPy generator of
tests/fixtures/timm/random_state.py), its four encoder stages and its probabilities for a seeded image, written by
``make_reference.py`` in a throwaway venv. Downloads are served by a file server on 127.0.0.1 standing in for the
hub (``$HF_ENDPOINT``), with the registry's checksum set to the served file's."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from kseg import models
from kseg.errors import KsegError
from kseg.models import hub_files, presets
from kseg.models.hf_segformer import load_hf_segformer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES / "timm"))
from random_state import load_shapes, random_image, random_state  # noqa: E402

REFERENCE = np.load(FIXTURES / "hf_segformer" / "segformer_b0_reference.npz")


def _state() -> dict:
    return random_state(json.loads((FIXTURES / "hf_segformer" / "segformer_b0_shapes.json").read_text()))


def _save(state, path) -> Path:
    from safetensors.numpy import save_file

    save_file(state, str(path))
    return Path(path)


def _stages(model):
    return keras.Model(model.inputs, [model.get_layer(f"norm{i}").output for i in range(1, 5)])(
        random_image(), training=False)


def _close(got, want):
    scale = float(np.abs(want).max())
    assert scale > 0.1  # a live network
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * max(scale, 1.0), rtol=1e-4)


def _segformer(num_classes=5, **kwargs):
    return models.build("segformer", backbone="mit_b0", num_classes=num_classes, input_shape=(None, None, 3), **kwargs)


def test_a_hub_checkpoint_computes_what_transformers_computes(tmp_path):
    model = _segformer()
    load_hf_segformer([layer for layer in model.layers if layer.weights], _save(_state(), tmp_path / "m.safetensors"))
    for i, got in enumerate(_stages(model), 1):
        _close(got, REFERENCE[f"stage{i}"])
    _close(model(random_image(), training=False), REFERENCE["probs"])


def _v5_name(key: str) -> str:
    """transformers 5's own names for a hub name (what its save_pretrained may write)."""
    for pattern, repl in [(r"encoder\.patch_embeddings\.(\d)\.", r"stages.\1.patch_embeddings."),
                          (r"encoder\.block\.(\d)\.", r"stages.\1.blocks."), (r"encoder\.layer_norm\.(\d)\.", r"stages.\1.layer_norm."),
                          (r"attention\.self\.query", "attention.q_proj"), (r"attention\.self\.sr", "attention.sequence_reduction.sequence_reduction"),
                          (r"attention\.self\.layer_norm", "attention.sequence_reduction.layer_norm"),
                          (r"attention\.self\.key", "attention.k_proj"), (r"attention\.self\.value", "attention.v_proj"),
                          (r"attention\.output\.dense", "attention.o_proj"), (r"mlp\.dense1", "mlp.fc1"), (r"mlp\.dense2", "mlp.fc2"),
                          ("layer_norm_1", "layernorm_before"), ("layer_norm_2", "layernorm_after"),
                          (r"decode_head\.linear_c", "decode_head.linear_projections")]:
        key = re.sub(pattern, repl, key)
    return key


def test_an_imagenet_encoder_file_with_transformers_5_names_loads_into_the_encoder_only(tmp_path):
    state = {_v5_name(k): v for k, v in _state().items() if not k.startswith("decode_head.")}
    state["classifier.weight"], state["classifier.bias"] = np.ones((1000, 256), np.float32), np.ones(1000, np.float32)
    assert any(".q_proj." in k for k in state)
    fresh = _segformer(num_classes=3)
    model = _segformer(num_classes=3, encoder_weights=str(_save(state, tmp_path / "mit.safetensors")))
    for i, got in enumerate(_stages(model), 1):
        _close(got, REFERENCE[f"stage{i}"])
    assert model.get_layer("final_conv").kernel.shape == fresh.get_layer("final_conv").kernel.shape == (1, 1, 256, 3)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("segformer.encoder.layer_norm.3.bias"), "has no weights for norm4/beta"),
    (lambda s: s.__setitem__("segformer.encoder.patch_embeddings.0.proj.weight", np.zeros((64, 3, 7, 7), np.float32)),
     "patch_embed1_proj.weight has shape (7, 7, 3, 64), kseg's patch_embed1_proj/kernel (7, 7, 3, 32)"),
    (lambda s: s.__setitem__("segformer.encoder.extra.weight", np.zeros((2,), np.float32)), "has no layer in the kseg model"),
])
def test_a_checkpoint_of_another_network_is_one_line_and_changes_nothing(tmp_path, change, message):
    state = _state()
    change(state)
    path = _save(state, tmp_path / "bad.safetensors")
    model = _segformer()
    before = model.get_layer("norm1").gamma.numpy().copy()
    with pytest.raises(KsegError) as err:
        load_hf_segformer([layer for layer in model.layers if layer.weights], path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)
    np.testing.assert_array_equal(model.get_layer("norm1").gamma.numpy(), before)


# --------------------------------------------------------------------------- downloads from a stand-in hub

@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A file server on 127.0.0.1 as ``$HF_ENDPOINT``, an empty Keras cache; ``put(url_path, file)`` serves a file."""
    root = tmp_path / "hub"
    root.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("KSEG_WEIGHTS_DIR", raising=False)

    def put(repo, revision, filename, data: bytes) -> str:
        target = root / repo / "resolve" / revision / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    yield put
    server.shutdown()


def test_imagenet_mit_is_downloaded_once_checked_and_then_used_offline(hub, monkeypatch, tmp_path, capsys):
    repo, revision, _ = hub_files.IMAGENET["mit_b0"]
    data = _save({k: v for k, v in _state().items() if not k.startswith("decode_head.")}, tmp_path / "x").read_bytes()
    monkeypatch.setitem(hub_files.IMAGENET, "mit_b0", (repo, revision, hub(repo, revision, "model.safetensors", data)))
    model = _segformer(encoder_weights="imagenet")
    _close(_stages(model)[3], REFERENCE["stage4"])
    cached = Path(tmp_path / "keras_home" / "models" / hub_files.imagenet_file("mit_b0").fname)
    assert cached.read_bytes() == data
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the cached file must do
    _close(_stages(_segformer(encoder_weights="imagenet"))[0], REFERENCE["stage1"])
    assert "no published checksum" not in capsys.readouterr().err


def test_a_download_with_another_checksum_is_removed_and_refused(hub, monkeypatch, tmp_path):
    repo, revision, _ = hub_files.IMAGENET["mit_b0"]
    hub(repo, revision, "model.safetensors", b"not the published file")
    monkeypatch.setitem(hub_files.IMAGENET, "mit_b0", (repo, revision, "0" * 64))
    with pytest.raises(KsegError, match="cannot download the ImageNet weights of mit_b0") as err:
        _segformer(encoder_weights="imagenet")
    assert "\n" not in str(err.value)
    assert not any((tmp_path / "keras_home" / "models").glob("*safetensors*"))


def test_imagenet_hrnet_without_a_pinned_checksum_says_so_and_loads(hub, monkeypatch, tmp_path, capsys):
    repo, revision, sha = hub_files.IMAGENET["hrnet_w18_small"]
    assert sha is None  # kseg knows no published SHA-256 for it
    data = _save(random_state(load_shapes("hrnet_w18_small")), tmp_path / "h").read_bytes()
    hub(repo, revision, "model.safetensors", data)
    model = models.build("hrnet", backbone="hrnet_w18_small", num_classes=3, input_shape=(64, 64, 3),
                         encoder_weights="imagenet")
    err = capsys.readouterr().err
    assert "no published checksum is pinned in kseg" in err and hashlib.sha256(data).hexdigest() in err
    assert model.get_layer("conv1").kernel.shape == (3, 3, 3, 64)


def test_every_listed_pretrained_backbone_has_a_source():
    for backbone in models.SUPPORTED["segformer"] + models.SUPPORTED["hrnet"]:
        entry = hub_files.imagenet_file(backbone)
        assert entry.url.startswith("https://huggingface.co/") and entry.fname


# --------------------------------------------------------------------------- pretrained segmenters

def _serve_preset(hub, tmp_path, name, num_classes=5):
    preset = presets.PRESETS[name]
    config = json.dumps({"id2label": {str(i): f"class{i}" for i in range(num_classes)}}).encode()
    hub(preset.repo, preset.revision, "config.json", config)
    hub(preset.repo, preset.revision, "model.safetensors", _save(_state(), tmp_path / "seg.safetensors").read_bytes())


def test_a_preset_loads_with_its_class_names_and_computes_the_reference(hub, tmp_path, capsys):
    _serve_preset(hub, tmp_path, "segformer-b0-ade20k")
    model, info = presets.load_preset("segformer-b0-ade20k")
    assert info["class_names"] == [f"class{i}" for i in range(5)] and info["short_side"] == 512
    _close(model(random_image(), training=False), REFERENCE["probs"])
    assert "no published checksum" in capsys.readouterr().err  # the presets' files have none pinned
    import kseg

    again = kseg.load_model("segformer-b0-ade20k")  # now from the Keras cache
    _close(again(random_image(), training=False), REFERENCE["probs"])


def test_kseg_predict_runs_a_preset_on_a_photo_with_a_legend(hub, tmp_path):
    from PIL import Image

    from kseg.predict import main

    _serve_preset(hub, tmp_path, "segformer-b0-cityscapes")
    photo = tmp_path / "street.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(photo)
    assert main(["--model", "segformer-b0-cityscapes", str(photo), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    class_map = np.asarray(Image.open(tmp_path / "out" / "street.png"))
    overlay = np.asarray(Image.open(tmp_path / "out" / "street_overlay.png"))
    assert class_map.shape[:2] == (90, 160)
    assert overlay.shape[0] > 90 and overlay.shape[1] == 160  # the legend strip below the photo


def test_a_preset_starts_a_new_segformers_encoder(hub, tmp_path):
    _serve_preset(hub, tmp_path, "segformer-b0-cityscapes")
    model = _segformer(num_classes=3, encoder_weights="segformer-b0-cityscapes")
    for i, got in enumerate(_stages(model), 1):
        _close(got, REFERENCE[f"stage{i}"])
    with pytest.raises(KsegError, match="segformer-b0-cityscapes holds a mit_b0 encoder, not mit_b2"):
        models.build("segformer", backbone="mit_b2", num_classes=3, encoder_weights="segformer-b0-cityscapes")
    with pytest.raises(KsegError, match="unknown SegFormer preset 'segformer-b7-ade20k'"):
        _segformer(encoder_weights="segformer-b7-ade20k")


def test_an_unknown_preset_and_an_offline_preset_are_one_line(monkeypatch, tmp_path):
    with pytest.raises(KsegError, match="unknown model preset 'segformer-b9'"):
        presets.load_preset("segformer-b9")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("KSEG_WEIGHTS_DIR", raising=False)
    with pytest.raises(KsegError, match="^cannot download the class names of segformer-b0-ade20k") as err:
        presets.load_preset("segformer-b0-ade20k")
    assert "KSEG_WEIGHTS_DIR" in str(err.value) and "\n" not in str(err.value)


HF_PYTHON = __import__("os").environ.get("KSEG_HF_PYTHON", "/work/venv-timm-hrnet/bin/python")


def _has_transformers() -> bool:
    import subprocess

    return Path(HF_PYTHON).is_file() and subprocess.run([HF_PYTHON, "-c", "import transformers, torch"],
                                                        capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_transformers(),
                    reason="no Python with transformers and torch ($KSEG_HF_PYTHON): the pinned reference is used instead")
def test_the_pinned_reference_is_what_transformers_computes_now(tmp_path):
    import shutil
    import subprocess

    (tmp_path / "hf_segformer").mkdir()
    shutil.copytree(FIXTURES / "timm", tmp_path / "timm")
    shutil.copy(FIXTURES / "hf_segformer" / "make_reference.py", tmp_path / "hf_segformer")
    subprocess.run([HF_PYTHON, str(tmp_path / "hf_segformer" / "make_reference.py")], check=True, capture_output=True,
                   timeout=600)
    live = np.load(tmp_path / "hf_segformer" / "segformer_b0_reference.npz")
    for key in REFERENCE.files:
        np.testing.assert_allclose(live[key], REFERENCE[key], rtol=1e-5, atol=1e-6)


def test_kseg_export_serves_a_preset_from_uint8_photos_of_any_size(hub, tmp_path):
    import tensorflow as tf

    from kseg.export import main

    _serve_preset(hub, tmp_path, "segformer-b0-ade20k")
    out = tmp_path / "served"
    assert main(["--model", "segformer-b0-ade20k", "--out", str(out), "--no-tflite"]) == 0
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    photo = np.random.default_rng(2).integers(0, 255, (1, 64, 96, 3), dtype=np.uint8)
    got = serve(tf.constant(photo))
    probs = next(v for k, v in got.items() if "prob" in k).numpy()
    want = np.asarray(presets.load_preset("segformer-b0-ade20k")[0](photo.astype(np.float32), training=False))
    np.testing.assert_allclose(probs, want, atol=1e-4)
    odd = serve(tf.constant(np.zeros((1, 70, 100, 3), np.uint8)))  # any size, not only multiples of 32
    probs = next(v for k, v in odd.items() if "prob" in k).numpy()
    assert probs.shape == (1, 70, 100, 5) and np.allclose(probs.sum(-1), 1.0, atol=1e-4)
