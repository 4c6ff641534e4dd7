"""kseg as a library: readable datasets, and every architecture building on its default backbone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import kseg
from kseg import models
from kseg.data import folder, load_iccv09


def test_iccv09_repr_is_one_line_without_the_labels(tiny_iccv09):
    info = load_iccv09(tiny_iccv09, mask="surfaces")
    text = repr(info)
    assert text == (f"Iccv09(root={str(info.root)!r}, mask='surfaces', images=6, "
                    f"classes={list(info.class_names)})")
    assert info.class_names and "\n" not in text and "array" not in text
    assert str(info) == text


def test_folder_dataset_repr_says_binary_and_colours(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4:12] = 255
        cv2.imwrite(str(tmp_path / "masks" / f"{i}.png"), mask)
    ds = folder(tmp_path / "images", tmp_path / "masks", quiet=True)
    text = repr(ds)
    assert text.startswith(f"FolderDataset(root={str(ds.root)!r}, mask={str(ds.mask)!r}, images=3, "
                           f"classes=['background', 'foreground'], binary=True, colors=")
    assert "\n" not in text and "array" not in text and len(text) < 300


def test_segnet_builds_with_its_own_default_backbone():
    model = models.build("segnet", num_classes=8)
    assert models.default_backbone("segnet") == "vgg16"
    assert model.output_shape == (None, None, None, 8)


def test_default_backbone_is_resnet34_where_supported():
    own = {"segnet": "vgg16", "segformer": "mit_b0", "hrnet": "hrnet_w18_small_v2"}  # architectures that do not build on resnet34
    assert {name: models.default_backbone(name) for name in models.list_models()} == {
        name: own.get(name, "resnet34") for name in models.list_models()}


# narrower heads than the builders' defaults, to keep the sweep quick; the backbone is each one's default
SMALL_HEADS = {
    "pspnet": dict(filters=32, pool_filters=8),
    "deeplabv3plus": dict(aspp_filters=32, low_level_filters=8, decoder_filters=32),
    "unet": dict(decoder_filters=(64, 32, 16, 8, 8)),
}


@pytest.mark.parametrize("name", models.list_models())
def test_every_architecture_builds_on_its_default_backbone(name):
    model = kseg.models.build(name, num_classes=2, input_shape=(32, 32, 3), **SMALL_HEADS.get(name, {}))
    out = np.asarray(model(np.zeros((1, 32, 32, 3), "float32"), training=False))
    assert out.shape == (1, 32, 32, 2)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)  # softmax probabilities
