"""kseg.models.encoder_layers: the encoder of a built model without freezing it, after save / load and copies."""

from __future__ import annotations

import pytest

import keras

from kseg import models
from kseg.errors import KsegError
from kseg.models.layers import freeze

SHAPE = (64, 64, 3)


def _names(layers_) -> list[str]:
    return [layer.name for layer in layers_]


def _frozen_by_build(name, backbone, **kwargs):
    """A model built with ``encoder_freeze=True`` and the names of the layers that froze (kseg's encoder)."""
    model = models.build(name, backbone=backbone, num_classes=2, input_shape=SHAPE, encoder_freeze=True, **kwargs)
    return model, [layer.name for layer in model.layers if not layer.trainable]


def _on(name: str) -> str:
    """resnet18 where architecture ``name`` builds on it, else its first backbone."""
    supported = models.supported_backbones(name)
    return "resnet18" if "resnet18" in supported else supported[0]


@pytest.mark.parametrize("name, backbone", [("unet", b) for b in models.supported_backbones("unet")]
                         + [(m, _on(m)) for m in models.list_models() if m not in ("unet", "segnet")]
                         + [("segnet", "vgg16"), ("segnet", "plain")])
def test_the_encoder_is_what_encoder_freeze_freezes(name, backbone):
    model, frozen = _frozen_by_build(name, backbone)
    assert frozen  # the build froze something: the comparison is not between two empty lists
    assert _names(models.encoder_layers(model)) == frozen
    freeze(model, trainable=True)  # the trainable flags play no part
    assert _names(models.encoder_layers(model)) == frozen


def test_an_unfrozen_model_names_the_same_encoder():
    frozen = _frozen_by_build("fpn", "resnet18")[1]
    model = models.build("fpn", backbone="resnet18", num_classes=2, input_shape=SHAPE)
    assert all(layer.trainable for layer in model.layers)
    assert _names(models.encoder_layers(model)) == frozen
    assert "final_conv" not in frozen and "head_conv" not in frozen and "image" not in frozen


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv2"])
def test_the_encoder_survives_save_and_load(tmp_path, backbone):
    model = models.build("unet", backbone=backbone, num_classes=1, activation="sigmoid", input_shape=SHAPE)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert _names(models.encoder_layers(loaded)) == _names(models.encoder_layers(model))
    assert len(models.encoder_layers(loaded)) > (1 if backbone == "mobilenetv2" else 50)


def test_a_copy_at_another_output_stride_keeps_its_encoder():
    model = models.build("deeplabv3plus", backbone="resnet18", num_classes=2, input_shape=SHAPE)
    copy = models.with_output_stride(model, 8)
    assert _names(models.encoder_layers(copy)) == _names(models.encoder_layers(model))


def test_segmentation_models_encoders_are_found_too():
    """kseg.sm's encoder (``encoder_features``): freezing leaves its batch norms trainable, the encoder holds them."""
    model = models.build("unet", backbone="resnet18", num_classes=2, input_shape=SHAPE, encoder_features="default",
                         encoder_freeze=True)
    encoder = models.encoder_layers(model)
    assert _names(encoder) == _names(models.encoder_layers(models.build("unet", backbone="resnet18", num_classes=2,
                                                                         input_shape=SHAPE)))
    trainable = [layer for layer in encoder if layer.trainable]
    assert trainable and all(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert all(not layer.trainable for layer in encoder if not isinstance(layer, keras.layers.BatchNormalization))


def test_a_model_without_a_kseg_encoder_says_so():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs), name="mine")
    with pytest.raises(KsegError, match="^model 'mine' has no encoder kseg recognises: none of its layers is named "
                                        "as a kseg backbone's output$"):
        models.encoder_layers(model)
