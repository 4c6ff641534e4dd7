"""kseg.detection.panoptic_fpn: Detectron2's semantic head on Mask R-CNN's FPN, its labels and its loss.

Training goes through ``MaskRCNN.losses_for`` (the instance losses); these tests replace it with a
stand-in returning a fixed dict, so they check only what PanopticFPN adds.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kseg.detection.panoptic_fpn import (IGNORE, PanopticFPN, SemanticHead, panoptic_fpn, semantic_loss,
                                         semantic_lookup, semantic_targets)
from kseg.errors import KsegError

SMALL = dict(backbone="mobilenetv2", pre_nms_top_n=100, post_nms_top_n=50, detections=10, box_candidates=200)


@pytest.fixture(scope="module")
def model():
    return panoptic_fpn(5, 3, **SMALL)


def _image(h=64, w=64, seed=0):
    return (np.random.default_rng(seed).random((1, h, w, 3)) * 255).astype(np.float32)


def test_outputs_at_unknown_and_fixed_sizes(model):
    for h, w in ((64, 64), (64, 96)):
        out = model({"image": _image(h, w), "image_size": np.array([[h - 10, w]], np.int32)})
        assert out["semantic"].shape == (1, h, w, 4)
        np.testing.assert_allclose(np.asarray(out["semantic"]).sum(-1), 1.0, atol=1e-5)
        assert out["boxes"].shape == (1, 10, 4) and out["masks"].shape == (1, 10, 28, 28)
        assert float(np.asarray(out["boxes"])[..., 1::2].max()) <= h - 10  # clipped to image_size
    fixed = panoptic_fpn(2, 1, input_shape=(64, 64, 3), **SMALL)
    out = fixed(_image())
    assert out["semantic"].shape == (1, 64, 64, 2) and out["classes"].shape == (1, 10)


def test_semantic_head_is_detectron2s():
    """Parameter count of SemSegFPNHead (256 in, 128 conv dims, GN): P2 1 conv, P3 1, P4 2, P5 3, predictor."""
    head = SemanticHead(54)
    head.build([(None, None, None, 256)] * 4)
    first, inner = 256 * 128 * 9, 128 * 128 * 9
    assert head.count_params() == 4 * first + 3 * inner + 7 * 2 * 128 + 128 * 54 + 54
    assert [c.use_bias for c in head.convs] == [False] * 7 and head.norms[0].groups == 32
    levels = [np.zeros((1, 16 // s, 24 // s, 256), np.float32) for s in (1, 2, 4, 8)]
    assert head(levels).shape == (1, 64, 96, 54)


def test_upsampling_is_bilinear_without_corner_alignment():
    """PyTorch's interpolate(scale_factor=2, bilinear, align_corners=False) of [0, 1] is [0, .25, .75, 1]."""
    from kseg.detection.panoptic_fpn import _upsample

    x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
    np.testing.assert_allclose(np.asarray(_upsample(x, 2))[0, 0, :, 0], [0, 0.25, 0.75, 1.0], atol=1e-6)


def test_save_and_load_give_equal_outputs(model, tmp_path):
    x = {"image": _image(seed=3), "image_size": np.array([[64, 64]], np.int32)}
    before = model(x)
    model.save(tmp_path / "panoptic.keras")
    loaded = keras.saving.load_model(tmp_path / "panoptic.keras")
    assert isinstance(loaded, PanopticFPN) and (loaded.num_things, loaded.num_stuff) == (5, 3)
    after = loaded(x)
    assert set(after) == {"boxes", "scores", "classes", "masks", "valid", "semantic"}
    for k in before:
        np.testing.assert_array_equal(np.asarray(before[k]), np.asarray(after[k]))


def _targets(b=1, h=64, w=64):
    sem = np.zeros((b, h, w), np.int32)
    sem[:, : h // 2] = 1
    sem[:, :, : w // 4] = 3
    sem[:, -4:] = IGNORE
    return {"image": _image(h, w), "boxes": np.zeros((b, 2, 4), np.float32), "classes": np.zeros((b, 2), np.int32),
            "masks": np.zeros((b, 2, h, w), np.uint8), "crowd": np.zeros((b, 2), bool), "semantic": sem}


def test_training_adds_the_semantic_loss_and_gradients_reach_the_head(model):
    import tensorflow as tf

    from kseg.detection.maskrcnn import LOSSES

    inputs = _targets()
    with tf.GradientTape() as tape:
        losses = model(inputs, training=True)
        total = model.compute_loss(y_pred=losses)
    assert set(losses) == {*LOSSES, "semantic"} and np.isfinite(float(total))
    logits = model.semantic_logits(model.pyramid(inputs["image"], training=True))  # batch statistics, as in fit
    assert float(losses["semantic"]) == pytest.approx(float(semantic_loss(logits, inputs["semantic"])), rel=1e-5)
    assert float(losses["semantic"]) > 0
    weights = model.semantic_head.trainable_weights
    grads = tape.gradient(total, weights + model.pyramid.trainable_weights[-2:])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    del inputs["semantic"]
    with pytest.raises(KsegError, match="PanopticFPN training needs a 'semantic' target"):
        model(inputs, training=True)


def test_semantic_loss_by_hand():
    # pixel 0: logits (0, ln 3), label 1 -> -log(3/4); pixel 1: logits (0, 0), label 0 -> log 2;
    # pixel 2: ignored. Mean over the 2 kept pixels, times 0.5.
    logits = np.array([[[[0.0, np.log(3.0)], [0.0, 0.0], [5.0, -5.0]]]], np.float32)
    labels = np.array([[[1, 0, IGNORE]]])
    expected = 0.5 * (-np.log(0.75) + np.log(2.0)) / 2
    assert float(semantic_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)
    assert float(semantic_loss(logits, labels, weight=1.0)) == pytest.approx(2 * expected, rel=1e-6)
    assert float(semantic_loss(logits, np.full((1, 1, 3), IGNORE))) == 0.0


def test_semantic_targets_follow_detectron2s_convention():
    shapes_map = np.array([[6, 7, 8, 1], [5, 2, 0, 255]], np.uint8)  # kseg shapes: things 1-5, stuff 6-8
    np.testing.assert_array_equal(semantic_targets(shapes_map, stuff_ids=[8, 6, 7]),
                                  [[1, 2, 3, 0], [0, 0, IGNORE, IGNORE]])
    assert semantic_lookup([6, 7, 8]).dtype == np.uint8 and semantic_lookup([6])[6] == 1
    with pytest.raises(KsegError, match=r"stuff category ids must be distinct, in 1\.\.254"):
        semantic_lookup([6, 6])
    with pytest.raises(KsegError, match=r"a category map holds ids 0\.\.255; got 0\.\.300"):
        semantic_targets(np.array([0, 300]), [6])


def test_builder_and_config_errors():
    with pytest.raises(KsegError, match=r"num_classes \(91\) must be num_things \+ 1 \(6\)"):
        PanopticFPN(num_things=5, num_classes=91)
    with pytest.raises(KsegError, match="panoptic_fpn weights must be None, 'imagenet' or a .weights.h5 file"):
        panoptic_fpn(2, 1, weights="model.pth", **SMALL)


def test_semantic_head_and_loss_equal_detectron2s():
    """Against tests/fixtures/detectron2/semseg_reference.npz: a transcription of Detectron2's SemSegFPNHead in
    torch (make_semseg_reference.py) with small sizes, its seeded weights loaded into kseg's head."""
    from pathlib import Path

    ref = np.load(Path(__file__).parents[1] / "fixtures" / "detectron2" / "semseg_reference.npz")
    head = SemanticHead(4, channels=16, groups=4)
    head.build([(None, None, None, 8)] * 4)
    names = [f"p{i + 2}/{2 * k}" for i, depth in enumerate(head.depths) for k in range(depth)]
    for conv, norm, name in zip(head.convs, head.norms, names):
        conv.set_weights([ref[f"{name}/0/weight"].transpose(2, 3, 1, 0)])
        norm.set_weights([ref[f"{name}/1/weight"], ref[f"{name}/1/bias"]])
    head.predictor.set_weights([ref["predictor/weight"].transpose(2, 3, 1, 0), ref["predictor/bias"]])
    logits = head([ref[f"feat{i}"] for i in range(4)])
    np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=2e-5)
    assert float(semantic_loss(logits, ref["labels"])) == pytest.approx(float(ref["loss"]), rel=1e-5)
