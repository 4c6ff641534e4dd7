"""Shared fixtures: a tiny iccv09-shaped folder, a few real iccv09 images, tiny models."""

from __future__ import annotations

import os
import platform
import tarfile
from pathlib import Path

import numpy as np
import pytest

# the settings a kseg command starts TensorFlow with (kseg.startup), before anything imports it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
import kseg  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (CI's layout); KSEG_TEST_SHARED names another (a worktree elsewhere)
SHARED = Path(os.environ.get("KSEG_TEST_SHARED") or REPO.parent / "shared")
ARCHIVE = SHARED / "data" / "iccv09Data.tar.gz"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def load_bench(name: str):
    """bench/<name>.py as a module (``bench_<name>``), with bench/ importable as its scripts expect."""
    import importlib.util
    import sys

    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own label cache folder."""
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "kseg-cache"))


def write_label(path: Path, arr: np.ndarray) -> None:
    path.write_text("\n".join(" ".join(str(int(v)) for v in row) for row in arr) + "\n")


def make_tiny_iccv09(root: Path, n: int = 6, size=(40, 48), seed: int = 0) -> Path:
    """Write an iccv09-shaped dataset: ``n`` JPEGs of HxW ``size`` with regions and surfaces labels.

    Labels are simple images of the content (top = sky, bottom = ground) with a
    few -1 pixels, so a model can learn them.
    """
    import cv2

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    h, w = size
    for i in range(n):
        horizon = int(rng.integers(h // 3, 2 * h // 3))
        surfaces = np.full((h, w), 2, np.int64)
        surfaces[:horizon] = 0
        surfaces[horizon + h // 6:] = 1
        regions = np.where(surfaces == 0, 0, np.where(surfaces == 1, 2, 5))
        surfaces[0, :3] = -1
        regions[-1, -2:] = -1
        img = np.zeros((h, w, 3), np.uint8)
        img[:horizon] = (200, 160, 90)  # BGR sky
        img[horizon:] = (60, 120, 60)
        img[horizon + h // 6:] = (90, 90, 90)
        img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
        ident = f"{i:07d}"
        cv2.imwrite(str(root / "images" / f"{ident}.jpg"), img)
        write_label(root / "labels" / f"{ident}.surfaces.txt", surfaces)
        write_label(root / "labels" / f"{ident}.regions.txt", regions)
    return root


@pytest.fixture
def tiny_iccv09(tmp_path) -> Path:
    """A tiny iccv09-shaped folder (6 images of 40x48) in tmp_path."""
    return make_tiny_iccv09(tmp_path / "iccv09Data")


@pytest.fixture(scope="session")
def real_iccv09(tmp_path_factory) -> Path:
    """The first few real iccv09 images (with both label kinds) from ../shared's archive."""
    if not ARCHIVE.exists():
        pytest.skip(f"{ARCHIVE} not found")
    root = tmp_path_factory.mktemp("real") / "iccv09Data"
    n = int(os.environ.get("KSEG_TEST_REAL_IMAGES", "12"))
    with tarfile.open(ARCHIVE) as tar:
        ids = []
        for m in tar:
            if m.name.startswith("iccv09Data/images/") and m.name.endswith(".jpg"):
                ids.append(Path(m.name).stem)
                if len(ids) == n:
                    break
    wanted = {f"iccv09Data/images/{i}.jpg" for i in ids}
    wanted |= {f"iccv09Data/labels/{i}.{k}.txt" for i in ids for k in ("regions", "surfaces")}
    with tarfile.open(ARCHIVE) as tar:
        for m in tar:
            if m.name in wanted:
                out = root.parent / m.name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(m).read())
    return root


# Two 5x5 masks: truth 14 pixels, prediction 15, overlap 11 -> IoU 11/18 = 0.6111, Dice 22/29 = 0.7586.
TRUTH_5x5 = np.array([[0, 0, 0, 0, 0],
                      [1, 1, 1, 1, 1],
                      [1, 1, 1, 1, 1],
                      [1, 1, 1, 1, 0],
                      [0, 0, 0, 0, 0]])
PRED_5x5 = np.array([[0, 0, 0, 0, 0],
                     [1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 1],
                     [1, 0, 0, 0, 0],
                     [1, 1, 1, 1, 0]])


def tiny_deeplab_pair(seed=0):
    """A small DeepLabV3+ (plain backbone, 64x64, 3 classes) built at output stride 16 and the same at 8,
    sharing one set of random weights: ``(at_16, at_8)``."""
    import keras

    from kseg import models

    keras.utils.set_random_seed(seed)
    kw = dict(num_classes=3, input_shape=(64, 64, 3), aspp_filters=16, low_level_filters=8, decoder_filters=16,
              backbone_kwargs={"filters": (8, 8, 16, 16, 16)})
    at16 = models.build("deeplabv3plus", backbone="plain", **kw)
    at8 = models.build("deeplabv3plus", backbone="plain", output_stride=8, **kw)
    at8.set_weights(at16.get_weights())
    return at16, at8


def tiny_model(size=(64, 64), classes=3, seed=0):
    """A small fully convolutional segmentation model ending in softmax (fast to export and convert)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((*size, 3) if size else (None, None, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.UpSampling2D(2)(x)
    out = layers.Conv2D(classes, 1, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(0, 2))(x)
    return keras.Model(inp, out)


def batch(size=64, n=2, classes=3, seed=0):
    """A fixed tiny batch: raw RGB in [0, 255] and one-hot targets that follow the image (sky / grass / road)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size, 3), "float32")
    y = np.zeros((n, size, size), "int64")
    for i in range(n):
        h = int(rng.integers(size // 4, size // 2))
        x[i, :h] = (90, 160, 220)
        x[i, h:] = (60, 130, 60)
        y[i, h:] = 1
        x[i, -size // 4:] = (100, 100, 100)
        y[i, -size // 4:] = 2
    x += rng.normal(0, 8, x.shape).astype("float32")
    return np.clip(x, 0, 255), np.eye(classes, dtype="float32")[y]


@pytest.fixture
def run_model(monkeypatch) -> dict:
    """``{"model": ...}`` once a training run in this test writes its outputs: the run's live, compiled model
    (best.keras holds no optimizer state; this is how a test reads the optimizer the run trained with)."""
    import importlib

    fit_module = importlib.import_module("kseg.training.fit")  # the module (kseg.training.fit is also its function)
    seen, write = {}, fit_module.write_outputs

    def spy(model, *args, **kwargs):
        seen["model"] = model
        return write(model, *args, **kwargs)

    monkeypatch.setattr(fit_module, "write_outputs", spy)
    return seen
