"""The pinned torchvision reference (tests/fixtures/torchvision/*.npz) is what torchvision computes now: where a
Python with torch and torchvision exists ($KSEG_TORCHVISION_PYTHON, default the throwaway venv
/work/venv-timm-hrnet), make_detection_reference.py runs again and every array is compared. And one op runs
inside a Keras model (a compiled graph) the way a detection model uses it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.roi_align import roi_align, roi_align_ops

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision"
# the files make_detection_reference.py writes (maskrcnn_reference.npz comes from make_maskrcnn_reference.py)
OPS_FILES = ("anchors.npz", "boxes.npz", "losses.npz", "masks.npz", "matching.npz", "nms.npz", "roi_align.npz")
TORCH_PYTHON = os.environ.get("KSEG_TORCHVISION_PYTHON", "/work/venv-timm-hrnet/bin/python")


@pytest.mark.skipif(not Path(TORCH_PYTHON).is_file(),
                    reason="no Python with torch and torchvision ($KSEG_TORCHVISION_PYTHON): the pinned reference "
                           "is used instead")
def test_the_pinned_reference_is_what_torchvision_computes_now(tmp_path):
    subprocess.run([TORCH_PYTHON, str(FIXTURES / "make_detection_reference.py"), str(tmp_path)], check=True,
                   capture_output=True, timeout=300)
    names = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert names == sorted(OPS_FILES)
    for name in names:
        live, pinned = np.load(tmp_path / name), np.load(FIXTURES / name)
        assert live.files == pinned.files
        for key in pinned.files:
            np.testing.assert_allclose(live[key], pinned[key], rtol=1e-6, atol=1e-6, err_msg=f"{name}:{key}")


def test_pinned_files_stay_small():
    sizes = {p.name: p.stat().st_size for p in FIXTURES.glob("*.npz")}
    assert set(sizes) == {*OPS_FILES, "maskrcnn_reference.npz", "tiny_expected.npz"} and max(sizes.values()) < 250_000, sizes


def test_roi_align_inside_a_keras_model():
    ref = np.load(FIXTURES / "roi_align.npz")
    feats = keras.Input((13, 17, 3), batch_size=2)
    boxes = keras.Input((4,), batch_size=40)
    batch = keras.Input((), batch_size=40, dtype="int32")
    for op, jit in ((roi_align_ops, True), (roi_align, False)):  # TensorFlow's crop_and_resize has no XLA kernel
        pooled = keras.layers.Lambda(lambda t, op=op: op(t[0], t[1], t[2], 7, 0.5, 2, aligned=True),
                                     output_shape=(7, 7, 3))([feats, boxes, batch])
        model = keras.Model([feats, boxes, batch], pooled)
        call = tf.function(model, jit_compile=jit)  # graph mode, as fit and predict run a model
        got = call([ref["features"], ref["boxes"], ref["batch"].astype(np.int32)]).numpy()
        np.testing.assert_allclose(got, ref["r_0.5_2_1_7x7"], rtol=1e-5, atol=1e-5)
