"""ImageNet weights for the resnet18 / resnet34 encoders: segmentation_models' files, loaded by layer name.

The files written here have the layout of classification_models' release files, which Keras 2's
``model.save_weights("x.h5")`` wrote. Reference: tf-keras, ``tf_keras/saving/legacy/hdf5_format.py``:
``save_weights_to_hdf5_group`` (root attributes ``layer_names`` (every layer of the model, in order,
weightless ones included), ``backend``, ``keras_version``; one group per layer),
``save_subset_weights_to_hdf5_group`` (per group the attribute ``weight_names`` and one dataset per
weight named after the variable, ``"<layer>/<weight>:0"``, so stored at ``<layer>/<layer>/<weight>:0``),
``_legacy_weights`` (a layer's weights in the order trainable, then non-trainable: BatchNormalization's
gamma, beta, moving_mean, moving_variance) and ``save_attributes_to_hdf5_group`` (byte strings).
The layers are classification_models' ResNet (``classification_models/models/resnet.py``,
include_top=False), spelled out below independently of kseg's builder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import textwrap
import types
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from kseg import models
from kseg.errors import KsegError
from kseg.models import weights as pretrained

REPETITIONS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
VENV_SM = Path("/work/venv-sm")


def _bn(name, channels, scale=True):
    names = (["gamma"] if scale else []) + ["beta", "moving_mean", "moving_variance"]
    return name, [(w, (channels,)) for w in names]


def classification_models_layers(backbone, channels=3, top=False):
    """``[(layer name, [(weight, shape), ...]), ...]``: classification_models' ResNet, include_top=False, in
    model order, with Keras 2's names for the unnamed layers (zero_padding2d_1, add_1, ...)."""
    out = [("data", []), _bn("bn_data", channels, scale=False), ("zero_padding2d_1", []),
           ("conv0", [("kernel", (7, 7, channels, 64))]), _bn("bn0", 64), ("relu0", []),
           ("zero_padding2d_2", []), ("pooling0", [])]
    pads, adds, cin = 2, 0, 64
    for stage, reps in enumerate(REPETITIONS[backbone]):
        f = 64 * 2 ** stage
        for block in range(reps):
            n = f"stage{stage + 1}_unit{block + 1}_"
            out += [_bn(n + "bn1", cin), (n + "relu1", [])]
            if block == 0:
                out.append((n + "sc", [("kernel", (1, 1, cin, f))]))
            out += [(f"zero_padding2d_{pads + 1}", []), (n + "conv1", [("kernel", (3, 3, cin, f))]),
                    _bn(n + "bn2", f), (n + "relu2", []), (f"zero_padding2d_{pads + 2}", []),
                    (n + "conv2", [("kernel", (3, 3, f, f))]), (f"add_{adds + 1}", [])]
            pads, adds, cin = pads + 2, adds + 1, f
    out += [_bn("bn1", 512), ("relu1", [])]
    if top:
        out += [("pool1", []), ("fc1", [("kernel", (512, 1000)), ("bias", (1000,))]), ("softmax", [])]
    return out


def random_arrays(spec, seed=0):
    """``{layer: {weight: array}}`` for the layers with weights; variances positive."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for layer, ws in spec:
        for w, shape in ws:
            a = rng.uniform(0.5, 2.0, shape) if w in ("gamma", "moving_variance") else rng.normal(0, 0.1, shape)
            arrays.setdefault(layer, {})[w] = a.astype("float32")
    return arrays


def write_keras2_h5(path, spec, arrays, drop=(), reshape=None):
    """Write ``arrays`` in the layout of Keras 2's ``save_weights`` (module docstring); layers in ``drop``
    are left out (a partial file), ``reshape`` = (layer, shape) stores that layer's first weight wrongly shaped."""
    with h5py.File(path, "w") as f:
        layers = [(n, ws) for n, ws in spec if n not in drop]
        f.attrs["layer_names"] = [n.encode("utf8") for n, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, ws in sorted(layers):
            g = f.create_group(name)
            names = [f"{name}/{w}:0".encode("utf8") for w, _ in ws]
            g.attrs["weight_names"] = names
            for i, ((w, _), dset) in enumerate(zip(ws, names)):
                a = arrays[name][w]
                if reshape and reshape[0] == name and i == 0:
                    a = np.zeros(reshape[1], "float32")
                g.create_dataset(dset.decode(), data=a)
    return Path(path)


def encoder_layer_names(model):
    return {layer.name for layer in model.layers
            if layer.weights and not layer.name.startswith(("decoder_", "final_conv", "aspp", "deeplab"))}


def assert_encoder_holds(model, arrays):
    checked = 0
    for name, ws in arrays.items():
        if name == "fc1":
            continue
        layer = model.get_layer(name)
        assert sorted(v.name for v in layer.weights) == sorted(ws), name
        for v in layer.weights:
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), ws[v.name], err_msg=f"{name}/{v.name}")
            checked += 1
    return checked


# --------------------------------------------------------------------------- loading by layer name

def test_resnet34_unet_holds_every_array_of_a_classification_models_file(tmp_path):
    spec = classification_models_layers("resnet34")
    arrays = random_arrays(spec)
    path = write_keras2_h5(tmp_path / "resnet34_imagenet_1000_no_top.h5", spec, arrays)
    with h5py.File(path) as f:  # the layout the docstring describes
        first = f["stage1_unit1_bn1"].attrs["weight_names"][0]
        assert (first.decode() if isinstance(first, bytes) else first) == "stage1_unit1_bn1/gamma:0"
        assert "stage1_unit1_bn1/stage1_unit1_bn1/gamma:0" in f
    m = models.build("unet", backbone="resnet34", num_classes=3, input_shape=(64, 64, 3), encoder_weights=str(path))
    assert encoder_layer_names(m) == set(arrays)  # every encoder layer with weights is one of the file's
    n = assert_encoder_holds(m, arrays)
    assert n == sum(len(ws) for ws in arrays.values()) == 34 * 4 + 3 + 33 + 4  # 34 BN, bn_data, 33 conv, 4 sc
    ref = models.build("unet", backbone="resnet34", num_classes=3, input_shape=(64, 64, 3))
    assert not np.array_equal(ref.get_layer("conv0").weights[0].numpy(), arrays["conv0"]["kernel"])


def test_a_file_with_the_classifier_loads_into_an_atrous_resnet18(tmp_path):
    """Layers the encoder lacks (pool1, fc1) are ignored; the atrous encoder has the same weights."""
    spec = classification_models_layers("resnet18", top=True)
    arrays = random_arrays(spec, seed=1)
    path = write_keras2_h5(tmp_path / "resnet18_imagenet_1000.h5", spec, arrays)
    m = models.build("deeplabv3plus", backbone="resnet18", num_classes=2, input_shape=(64, 64, 3),
                     output_stride=16, encoder_weights=str(path))
    assert assert_encoder_holds(m, arrays) == 18 * 4 + 3 + 17 + 4


@pytest.mark.parametrize("drop, reshape, message", [
    (("stage3_unit2_conv1",), None,
     "layer 'stage3_unit2_conv1' of the resnet18 encoder is not in the file (39 of its 40 layers with weights are)"),
    ((), ("conv0", (7, 7, 3, 32)),
     "layer 'conv0' holds weights of shapes [(7, 7, 3, 32)], the resnet18 encoder needs [(7, 7, 3, 64)]"),
])
def test_a_partial_or_different_file_is_refused_in_one_line(tmp_path, drop, reshape, message):
    spec = classification_models_layers("resnet18")
    path = write_keras2_h5(tmp_path / "w.h5", spec, random_arrays(spec), drop=drop, reshape=reshape)
    with pytest.raises(KsegError) as err:
        models.build("unet", backbone="resnet18", num_classes=1, activation="sigmoid", input_shape=(64, 64, 3),
                     encoder_weights=str(path))
    assert str(err.value) == f"{path}: {message}"


def test_four_channel_input_with_three_channel_weights_names_bn_data(tmp_path):
    spec = classification_models_layers("resnet18")
    path = write_keras2_h5(tmp_path / "w.h5", spec, random_arrays(spec))
    with pytest.raises(KsegError, match=r"layer 'bn_data' holds weights of shapes \[\(3,\), \(3,\), \(3,\)\], "
                                        r"the resnet18 encoder needs \[\(4,\), \(4,\), \(4,\)\]"):
        models.build("unet", backbone="resnet18", num_classes=3, input_shape=(64, 64, 4), encoder_weights=str(path))


def test_truncated_and_foreign_files_are_refused(tmp_path):
    spec = classification_models_layers("resnet18")
    good = write_keras2_h5(tmp_path / "w.h5", spec, random_arrays(spec))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # an interrupted download
    with pytest.raises(KsegError, match=rf"^{cut}: cannot read the weights file \("):
        models.build("unet", backbone="resnet18", input_shape=(64, 64, 3), encoder_weights=str(cut))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(KsegError, match=rf"^{other}: not a Keras 2 HDF5 weights file \(no 'layer_names' attribute\)$"):
        models.build("unet", backbone="resnet18", input_shape=(64, 64, 3), encoder_weights=str(other))
    with pytest.raises(KsegError, match=r"/nonexistent/w.h5: encoder weights file not found"):
        models.build("unet", backbone="resnet18", input_shape=(64, 64, 3), encoder_weights="/nonexistent/w.h5")


def test_keras3_weights_files_still_load(tmp_path):
    """A ``.weights.h5`` that Keras 3 wrote for the encoder sub-model loads as before (Keras's loader)."""
    a = models.build("unet", backbone="resnet18", num_classes=2, input_shape=(64, 64, 3))
    enc = keras.Model(a.input, a.get_layer("relu1").output)
    for v in enc.weights:
        v.assign(np.random.default_rng(len(v.path)).normal(0, 0.1, v.shape).astype("float32") + 1.0)
    path = tmp_path / "encoder.weights.h5"
    enc.save_weights(path)
    b = models.build("unet", backbone="resnet18", num_classes=2, input_shape=(64, 64, 3), encoder_weights=str(path))
    for layer in enc.layers:
        for v, w in zip(layer.weights, b.get_layer(layer.name).weights):
            np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=layer.name)


# --------------------------------------------------------------------------- "imagenet": registry, cache, download

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (get_file raises as Keras does without one), an empty Keras cache, no $KSEG_WEIGHTS_DIR."""
    calls = []

    def get_file(fname, origin=None, **kwargs):
        calls.append(dict(fname=fname, origin=origin, **kwargs))
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(pretrained.ENV_DIR, raising=False)
    return calls


def _register(monkeypatch, backbone, path):
    """Make ``path`` the published file of ``backbone`` (its md5), as the real file is for the real entry."""
    entry = pretrained.REGISTRY[backbone]
    digest = hashlib.md5(Path(path).read_bytes()).hexdigest()
    monkeypatch.setitem(pretrained.REGISTRY, backbone, dataclasses.replace(entry, md5=digest))
    return entry


def test_registry_names_the_published_files():
    for name, entry in pretrained.REGISTRY.items():
        assert entry.url == ("https://github.com/qubvel/classification_models/releases/download/0.0.1/"
                             f"{name}_imagenet_1000_no_top.h5")
        assert entry.fname == entry.url.rsplit("/", 1)[1]
        assert len(entry.md5) == 32 and int(entry.md5, 16) >= 0


@pytest.mark.parametrize("build", [
    lambda: models.build("unet", backbone="resnet34", input_shape=(64, 64, 3), encoder_weights="imagenet"),
    lambda: __import__("kseg.sm", fromlist=["Unet"]).Unet("resnet34", input_shape=(64, 64, 3)),  # sm's default
])
def test_imagenet_offline_without_a_file_is_one_line_saying_what_to_do(offline, build):
    with pytest.raises(KsegError) as err:
        build()
    entry = pretrained.REGISTRY["resnet34"]
    assert str(err.value) == (
        "cannot download the ImageNet weights of resnet34 (URL fetch failure on "
        f"{entry.url}: None -- [Errno -3] Temporary failure in name resolution); download {entry.url} where "
        'there is internet and pass encoder_weights="/path/resnet34_imagenet_1000_no_top.h5", '
        "or put the file in $KSEG_WEIGHTS_DIR")
    assert "\n" not in str(err.value)
    # the download asked for: the official URL, into the Keras cache's models folder, checked against the md5
    assert offline == [dict(fname=entry.fname, origin=entry.url, file_hash=entry.md5, hash_algorithm="md5",
                            cache_subdir="models", cache_dir=os.environ["KERAS_HOME"])]


def test_imagenet_from_kseg_weights_dir_without_network(offline, monkeypatch, tmp_path):
    spec = classification_models_layers("resnet18")
    arrays = random_arrays(spec, seed=3)
    folder = tmp_path / "weights"
    folder.mkdir()
    path = write_keras2_h5(folder / "resnet18_imagenet_1000_no_top.h5", spec, arrays)
    _register(monkeypatch, "resnet18", path)
    monkeypatch.setenv(pretrained.ENV_DIR, str(folder))
    assert pretrained.resolve("resnet18", "imagenet") == str(path)
    m = models.build("unet", backbone="resnet18", input_shape=(64, 64, 3), encoder_weights="imagenet")
    assert assert_encoder_holds(m, arrays) == 18 * 4 + 3 + 17 + 4
    assert offline == []  # no download tried


def test_imagenet_from_the_keras_cache_without_network(offline, monkeypatch):
    spec = classification_models_layers("resnet18")
    arrays = random_arrays(spec, seed=4)
    cache = Path(os.environ["KERAS_HOME"]) / "models"
    cache.mkdir(parents=True)
    path = write_keras2_h5(cache / "resnet18_imagenet_1000_no_top.h5", spec, arrays)
    _register(monkeypatch, "resnet18", path)
    m = models.build("unet", backbone="resnet18", input_shape=(64, 64, 3), encoder_weights="imagenet")
    assert assert_encoder_holds(m, arrays) > 0
    assert offline == []


def test_a_file_with_the_wrong_hash_is_refused(offline, monkeypatch, tmp_path):
    spec = classification_models_layers("resnet18")
    folder = tmp_path / "weights"
    folder.mkdir()
    path = write_keras2_h5(folder / "resnet18_imagenet_1000_no_top.h5", spec, random_arrays(spec))
    got = hashlib.md5(path.read_bytes()).hexdigest()
    entry = pretrained.REGISTRY["resnet18"]
    monkeypatch.setenv(pretrained.ENV_DIR, str(folder))
    with pytest.raises(KsegError) as err:
        pretrained.resolve("resnet18", "imagenet")
    assert str(err.value) == (f"{path}: md5 {got} is not the published {entry.md5} of {entry.fname} "
                              f"(an incomplete or different file); download {entry.url} again")
    # in the Keras cache a wrong file is downloaded again (here: offline, so the download error) and removed
    monkeypatch.delenv(pretrained.ENV_DIR)
    cache = Path(os.environ["KERAS_HOME"]) / "models"
    cache.mkdir(parents=True)
    (cache / entry.fname).write_bytes(path.read_bytes())
    with pytest.raises(KsegError, match=r"^cannot download the ImageNet weights of resnet18 \(URL fetch failure"):
        pretrained.resolve("resnet18", "imagenet")
    assert len(offline) == 1
    assert not (cache / entry.fname).exists()  # the wrong file is not left in the cache
    # and a download that does not match is refused too
    (cache / entry.fname).write_bytes(path.read_bytes())
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: str(cache / entry.fname))
    with pytest.raises(KsegError, match=rf"^{cache / entry.fname}: md5 {got} is not the published {entry.md5}"):
        pretrained.resolve("resnet18", "imagenet")


def test_backbones_without_kseg_imagenet_weights_say_so():
    with pytest.raises(KsegError, match=r"^backbone 'plain' has no ImageNet weights in kseg; pass a weights file "
                                        r"path or None$"):
        models.build("unet", backbone="plain", input_shape=(64, 64, 3), encoder_weights="imagenet")


# --------------------------------------------------------------------------- segmentation_models itself

SM_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import segmentation_models as sm
    import tensorflow as tf
    out = sys.argv[1]
    model = sm.Unet("resnet34", encoder_weights=None, input_shape=(64, 64, 3), classes=3, activation="linear")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # random BN statistics too, so that every array matters
        values = []
        for w, v in zip(layer.weights, layer.get_weights()):
            n = w.name
            if layer.name == "bn_data":
                v = {"beta": rng.normal(0, 0.1, v.shape), "moving_mean": rng.uniform(100, 130, v.shape),
                     "moving_variance": rng.uniform(3000, 4000, v.shape)}[n.split("/")[-1].split(":")[0]]
            elif "moving_variance" in n or "gamma" in n:
                v = rng.uniform(0.5, 1.5, v.shape)
            elif "moving_mean" in n or "beta" in n:
                v = rng.normal(0, 0.1, v.shape)
            values.append(np.asarray(v, "float32"))
        layer.set_weights(values)
    encoder = tf.keras.Model(model.input, model.get_layer("relu1").output)
    encoder.save_weights(os.path.join(out, "encoder.h5"))  # Keras 2 HDF5, as classification_models' files
    model.save_weights(os.path.join(out, "unet.h5"))
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "y.npy"), model.predict(x, verbose=0))
    print(sm.__version__, tf.keras.__name__)
""")


@pytest.mark.skipif(not (VENV_SM / "READY").exists(),
                    reason=f"needs segmentation_models 1.0.1 in {VENV_SM} (a reference venv; not a kseg dependency)")
def test_segmentation_models_encoder_file_gives_kseg_the_same_function(tmp_path):
    """sm.Unet('resnet34') with random weights saves its encoder with tf-keras' save_weights (classification_models'
    format); kseg loads that file as encoder_weights, the decoder by name, and computes the same outputs."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "SM_FRAMEWORK": "tf.keras", "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    r = subprocess.run([str(VENV_SM / "bin" / "python"), "-c", SM_SCRIPT, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-2] == "1.0.1", r.stdout  # the last line: sm's version, tf.keras' module
    m = models.build("unet", backbone="resnet34", num_classes=3, input_shape=(64, 64, 3), activation=None,
                     encoder_weights=str(tmp_path / "encoder.h5"))
    decoder = [layer for layer in m.layers if layer.weights and layer.name not in encoder_layer_names(m)]
    assert len(decoder) == 21  # 10 conv + 10 BN + final_conv
    pretrained.load_keras2_h5(types.SimpleNamespace(layers=decoder), tmp_path / "unet.h5", "decoder")
    full = pretrained.read_keras2_h5(tmp_path / "unet.h5", [layer.name for layer in m.layers])
    for layer in m.layers:  # the encoder file and the full file agree, weight by weight
        for v, (_, a) in zip(layer.weights, full.get(layer.name, [])):
            np.testing.assert_array_equal(v.numpy(), a, err_msg=layer.name)
    x, y = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    got = m.predict(x, verbose=0)
    scale = float(np.abs(y).max())  # random BN statistics give logits in the hundreds: compare to their scale
    assert scale > 1e-2  # not a degenerate comparison
    np.testing.assert_allclose(got, y, atol=1e-4 * max(1.0, scale), rtol=0)
