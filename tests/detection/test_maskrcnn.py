"""kseg's Mask R-CNN equals torchvision's maskrcnn_resnet50_fpn on the same (seeded random) weights.

The reference numbers come from tests/fixtures/torchvision/make_maskrcnn_reference.py (torch 2.14.1,
torchvision 0.29.1, run outside kseg's venv); both sides build the weights from maskrcnn_state.py.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parents[1] / "fixtures" / "torchvision"
sys.path.insert(0, str(FIXTURES))
import maskrcnn_state as state  # noqa: E402

from kseg.detection import torchvision_weights as tw  # noqa: E402
from kseg.detection.maskrcnn import MaskRCNN  # noqa: E402
from kseg.errors import KsegError  # noqa: E402

REF = np.load(FIXTURES / "maskrcnn_reference.npz")


@pytest.fixture(scope="module")
def model():
    m = MaskRCNN(91)
    m.build((None, None, None, 3))
    tw.load_state_dict(m, state.random_state(state.load_shapes()))
    return m


def test_network_outputs_equal_torchvision(model):
    """Backbone + FPN levels, RPN head, box head and mask head, each on the same inputs."""
    image = state.random_image()
    levels = model.pyramid(image)
    for i, level in enumerate(levels):
        np.testing.assert_allclose(np.asarray(level)[0][..., state.CHANNELS], REF[f"p{i + 2}"], atol=2e-5)
    _, obj, deltas, _, _ = model.rpn_outputs(image)
    np.testing.assert_allclose(np.asarray(obj)[0], REF["objectness"], atol=2e-5)
    np.testing.assert_allclose(np.asarray(deltas)[0], REF["rpn_deltas"], atol=2e-5)
    box_in, mask_in = state.head_inputs()
    logits, box_deltas = model.box_head(box_in.transpose(0, 2, 3, 1))  # fc6 reads NHWC: the converter permutes it
    np.testing.assert_allclose(np.asarray(logits), REF["head_logits"], atol=2e-5)
    np.testing.assert_allclose(np.asarray(box_deltas).reshape(3, -1), REF["head_deltas"], atol=2e-5)
    masks = np.asarray(model.mask_head(mask_in.transpose(0, 2, 3, 1)))[..., state.MASK_CLASSES]
    np.testing.assert_allclose(masks, REF["mask_logits"], atol=2e-5)


def test_proposals_and_detections_equal_torchvision(model):
    from kseg.detection.masks import paste_masks

    image = state.random_image()
    _, obj, deltas, anchors, level_ids = model.rpn_outputs(image)
    props, valid = model.proposals(obj[0], deltas[0], anchors, level_ids, np.array(state.IMAGE_HW, np.float32))
    props = np.asarray(props)[np.asarray(valid)]
    assert props.shape == REF["proposals"].shape
    np.testing.assert_allclose(props, REF["proposals"], atol=1e-4)
    out = {k: np.asarray(v[0]) for k, v in model(image).items()}
    keep = out["valid"]
    assert keep.sum() == len(REF["scores"]) == 100
    np.testing.assert_allclose(out["boxes"][keep], REF["boxes"], atol=1e-4)
    np.testing.assert_allclose(out["scores"][keep], REF["scores"], atol=1e-5)
    np.testing.assert_array_equal(out["classes"][keep], REF["labels"])
    pasted = np.asarray(paste_masks(out["masks"][keep], out["boxes"][keep], *state.IMAGE_HW))
    np.testing.assert_allclose(pasted.reshape(100, -1).mean(1), REF["mask_means"], atol=1e-5)
    np.testing.assert_array_equal(np.packbits(pasted > 0.5, axis=-1), REF["mask_bits"])


def test_photo_pipeline_equals_torchvision(model):
    """Resize (150x200 -> 160x213), pad to 160x224, boxes scaled back, masks pasted at 150x200."""
    from kseg.detection.predictor import InstancePredictor

    got = InstancePredictor(model, min_size=state.PHOTO_MIN_SIZE, max_size=state.PHOTO_MAX_SIZE).predict(
        state.random_photo())
    assert len(got.scores) == len(REF["photo_scores"])
    np.testing.assert_allclose(got.boxes, REF["photo_boxes"], atol=2e-3)
    np.testing.assert_allclose(got.scores, REF["photo_scores"], atol=1e-4)
    np.testing.assert_array_equal(got.classes, REF["photo_labels"])
    bits = np.packbits(got.masks > 0.5, axis=-1)
    assert (bits == REF["photo_mask_bits"]).mean() > 0.9999


def test_a_wrong_checkpoint_changes_nothing(model):
    sd = state.random_state(state.load_shapes())
    before = model.box_head.fc7.get_weights()[0].copy()
    sd["roi_heads.box_head.fc7.weight"] = np.zeros((1024, 1023), np.float32)
    with pytest.raises(KsegError, match=r"ckpt\.pth: roi_heads\.box_head\.fc7 has shapes .* kseg's fc7 needs"):
        tw.load_state_dict(model, sd, origin="ckpt.pth")
    del sd["rpn.head.cls_logits.bias"]
    sd["roi_heads.box_head.fc7.weight"] = np.zeros((1024, 1024), np.float32)
    with pytest.raises(KsegError, match=r"ckpt\.pth: has no weights for rpn\.head\.cls_logits\.bias \(kseg layer cls_logits\)"):
        tw.load_state_dict(model, sd, origin="ckpt.pth")
    np.testing.assert_array_equal(model.box_head.fc7.get_weights()[0], before)
