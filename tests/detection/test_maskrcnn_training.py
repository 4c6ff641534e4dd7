"""Mask R-CNN trains: targets as torchvision makes them, five finite losses, gradients into every head, a few
steps on one batch lower the loss, and a trained model saves and loads."""

import numpy as np
import keras
import pytest
from keras import ops

from kseg.detection.boxes import BoxCoder
from kseg.detection.maskrcnn import LOSSES, MaskRCNN
from kseg.detection.targets import roi_targets, rpn_targets

SMALL = dict(backbone="mobilenetv2", fpn_channels=32, representation=64, train_pre_nms_top_n=100,
             train_post_nms_top_n=50, pre_nms_top_n=100, post_nms_top_n=50, roi_batch=32, max_mask_rois=8,
             detections=10, anchor_sizes=((8,), (16,), (32,), (64,), (128,)))


def batch(n=2, size=64, seed=0):
    """Two images with two square instances each (classes 1, 2) and one padding row."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    boxes = np.zeros((n, 3, 4), np.float32)
    masks = np.zeros((n, 3, size, size), np.uint8)
    classes = np.zeros((n, 3), np.int32)
    for i in range(n):
        for j, (x, y, w) in enumerate([(4, 6, 20), (30, 28, 26)]):
            boxes[i, j] = (x, y, x + w, y + w)
            masks[i, j, y:y + w, x:x + w] = 1
            images[i, y:y + w, x:x + w] = (200.0, 40.0, 40.0) if j == 0 else (40.0, 40.0, 200.0)
            classes[i, j] = j + 1
    return {"image": images, "boxes": boxes, "classes": classes, "masks": masks, "crowd": np.zeros((n, 3), bool)}


@pytest.fixture(scope="module")
def model():
    m = MaskRCNN(num_classes=3, **SMALL)
    m.build((None, 64, 64, 3))
    return m


def test_rpn_targets_by_hand():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 30, 30], [0, 0, 5, 5]], np.float32)
    gt = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    labels, targets, pos, neg = rpn_targets(anchors, gt, np.array([True, False]), np.array([False, False]),
                                            BoxCoder(), keras.random.SeedGenerator(0))
    # IoU with the gt: 1.0 (positive), 0.9 (positive), 0 (negative), 0.25 (negative, under 0.3)
    assert np.asarray(labels).tolist() == [1, 1, 0, 0]
    assert np.asarray(pos).tolist() == [True, True, False, False] and np.asarray(neg).tolist() == [False] * 2 + [True] * 2
    np.testing.assert_allclose(np.asarray(targets)[0], 0.0, atol=1e-6)


def test_roi_targets_put_positives_first_and_append_the_ground_truth():
    proposals = np.array([[50, 50, 60, 60], [1, 1, 11, 11], [0, 0, 0, 0]], np.float32)
    gt = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    rois, labels, targets, sampled, gt_index = roi_targets(
        proposals, np.array([True, True, False]), gt, np.array([2, 0]), np.array([False, False]),
        BoxCoder((10.0, 10.0, 5.0, 5.0)), keras.random.SeedGenerator(0), batch_size=8)
    labels, sampled, rois = np.asarray(labels), np.asarray(sampled), np.asarray(rois)
    # 8 x 0.25 = 2 positives at most: proposal 1 (IoU 0.68 with the gt) and the appended gt box itself;
    # proposal 0 is background; only the 5 rows there are come back (a batch larger than the rows);
    # the invalid proposal and the padding gt row are never sampled
    assert labels.tolist()[:3] == [2, 2, 0] and sampled.tolist() == [True, True, True, False, False]
    assert [0, 0, 10, 10] in rois[:2].tolist() and [1, 1, 11, 11] in rois[:2].tolist()
    assert np.asarray(gt_index)[:2].tolist() == [0, 0]


def test_losses_are_finite_and_gradients_reach_every_head(model):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        losses = model(batch(), training=True)
        total = model.compute_loss(y_pred=losses)
    assert sorted(losses) == sorted(LOSSES) and all(np.isfinite(float(v)) for v in losses.values())
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(total, model.trainable_variables)))
    for part in ("rpn_head", "box_head", "mask_head", "fpn_layer_blocks_0_0", "fpn_inner_blocks_3_0", "Conv_1"):
        got = [g for p, g in grads.items() if part in p]
        assert got and all(g is not None for g in got), part
        assert any(float(ops.max(ops.abs(g))) > 0 for g in got), part
    assert not any("normalization" in p and "beta" in p for p in grads)  # batch norm is frozen


def test_a_few_steps_lower_the_loss_and_the_model_saves(model, tmp_path):
    model.compile(optimizer=keras.optimizers.Adam(3e-4), jit_compile=False)
    data = batch()
    first = model.train_on_batch(data, return_dict=True)
    for _ in range(6):
        last = model.train_on_batch(data, return_dict=True)
    assert last["loss"] < 0.9 * first["loss"], (first, last)
    assert set(LOSSES) <= set(last)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.settings == model.settings and type(loaded) is MaskRCNN
    # the trained weights come back, each by its own name (the outputs of a loaded model: test_panoptic_fpn.py)
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


# One training step of the same batch (four equal images) on one device and under MirroredStrategy on two
# logical CPUs; every candidate is sampled so both draw the same targets. Prints one JSON line.
MIRRORED = r"""
import json, sys
from kseg import distribute
devices = distribute.logical_cpus(2)
import keras, numpy as np, tensorflow as tf
sys.path.insert(0, "tests/detection")
from test_maskrcnn_training import batch, SMALL
from kseg.detection.maskrcnn import MaskRCNN

settings = {**SMALL, "rpn_batch": 2048, "roi_batch": 256, "max_mask_rois": 64}  # every candidate sampled

def run(strategy):
    keras.utils.set_random_seed(0)
    b = batch(4)
    b["image"][:] = b["image"][:1]  # four equal images: each replica's mean is the whole batch's
    data = tf.data.Dataset.from_tensor_slices(b).batch(4)
    if strategy is not None:
        data = distribute.shard_by_data(data)
    with distribute.scope(strategy):
        m = MaskRCNN(num_classes=3, **settings)
        m.build((None, 64, 64, 3))
        m.compile(keras.optimizers.SGD(0.01), jit_compile=False)
        distribute.build_for_fit(m, strategy, data)
    before = [np.array(v) for v in m.trainable_variables]
    logs = m.fit(data, epochs=1, verbose=0, shuffle=False).history
    return {k: v[0] for k, v in logs.items()}, before, [np.array(v) for v in m.trainable_variables]

one, w0, w_one = run(None)
two, _, w_two = run(distribute.get_strategy("mirrored", devices=devices))
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w_one, w_two))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(w_one, w0))
print("RESULT " + json.dumps({"one": one, "two": two, "weight_diff": diff, "moved": moved}))
"""


def test_a_training_step_under_mirrored_strategy_gives_one_devices_losses():
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    res = subprocess.run([sys.executable, "-c", MIRRORED], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, res.stderr[-2000:]
    got = json.loads(line[len("RESULT "):])
    for name in (*LOSSES, "loss"):
        assert abs(got["one"][name] - got["two"][name]) <= 1e-3 * max(1.0, abs(got["one"][name])), name
    assert got["moved"] > 0.1 and got["weight_diff"] < 0.1 * got["moved"]


def test_kseg_models_build_names_the_instance_architectures():
    from kseg import models
    from kseg.detection.panoptic_fpn import PanopticFPN

    small = {k: v for k, v in SMALL.items() if k != "backbone"}
    m = models.build("maskrcnn", backbone="mobilenetv2", num_classes=3, input_shape=(64, 64, 3), **small)
    assert isinstance(m, MaskRCNN) and m.num_classes == 3 and m.settings["backbone"] == "mobilenetv2"
    p = models.build("panoptic_fpn", backbone="mobilenetv2", num_classes=3, num_stuff=2, input_shape=(64, 64, 3),
                     **small)
    assert isinstance(p, PanopticFPN) and p.num_things == 2 and p.num_stuff == 2
    assert "maskrcnn" not in models.list_models()  # the semantic registry (kseg train's semantic --arch) is apart
