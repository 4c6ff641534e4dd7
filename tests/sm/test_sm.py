"""The classic tutorial's code, with only its import line changed, runs on kseg."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from kseg import sm as kseg_sm


def test_unet_resnet34_has_segmentation_models_parameter_count():
    # segmentation_models 1.0.1: sm.Unet('resnet34', classes=3) -> 24,456,444 parameters
    model = kseg_sm.Unet("resnet34", input_shape=(None, None, 3), classes=3, activation="softmax",
                         encoder_weights=None)
    assert model.count_params() == 24_456_444
    assert model.output_shape == (None, None, None, 3)


def test_unknown_backbone_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backbone"):
        kseg_sm.get_preprocessing("resnet999")


@pytest.mark.e2e
def test_tutorial_code_runs_with_only_the_import_changed(real_iccv09):
    # ---- the tutorial, as written, except the import line -------------------------------
    from kseg import sm  # was: import segmentation_models as sm
    import cv2
    from keras.utils import to_categorical

    sm.set_framework("tf.keras")
    sm.framework()

    data_dir = str(real_iccv09)
    image_paths = sorted(glob.glob(os.path.join(data_dir, "images", "*.jpg")))[:8]
    SIZE = 64  # the tutorial uses 224; a small size keeps this test fast
    images, masks = [], []
    for path in image_paths:
        img = cv2.imread(path)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (SIZE, SIZE))
        images.append(img)
        name = os.path.basename(path).replace(".jpg", ".surfaces.txt")
        mask = np.loadtxt(os.path.join(data_dir, "labels", name))
        mask = cv2.resize(mask, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        masks.append(mask)
    X = np.array(images)
    y = np.array(masks)
    y[y < 0] = 0
    y = to_categorical(y, num_classes=3)

    x_train, y_train = X[:6], y[:6]
    x_val, y_val = X[6:], y[6:]

    BACKBONE = "resnet34"
    preprocess_input = sm.get_preprocessing(BACKBONE)
    x_train = preprocess_input(x_train)
    x_val = preprocess_input(x_val)

    model = sm.Unet(BACKBONE, input_shape=(SIZE, SIZE, 3), classes=3, activation="softmax",
                    encoder_weights=None)
    model.compile("Adam", loss=sm.losses.categorical_focal_dice_loss,
                  metrics=[sm.metrics.iou_score, "accuracy"])
    history = model.fit(x_train, y_train, batch_size=3, epochs=2, verbose=0,
                        validation_data=(x_val, y_val))
    preds = model.predict(x_val)
    # ---- end of the tutorial ---------------------------------------------------------------
    assert preds.shape == (2, SIZE, SIZE, 3)
    np.testing.assert_allclose(preds.sum(-1), 1.0, atol=1e-4)
    assert set(history.history) >= {"loss", "iou_score", "accuracy", "val_loss", "val_iou_score"}
    assert all(np.isfinite(history.history["loss"]))


def test_binary_iou_and_f_score_count_the_background_as_segmentation_models_does():
    """25% foreground, everything predicted foreground: IoU 0.25 and F1 0.4 (segmentation_models 1.0.1 gives
    the same); an ignored pixel (255) changes nothing; an empty truth against a full prediction scores ~0."""
    import numpy as np

    from kseg import sm

    truth = np.zeros((1, 4, 4, 1), np.float32)
    truth[0, :2, :2] = 1.0
    pred = np.ones((1, 4, 4, 1), np.float32)
    assert float(sm.metrics.iou_score(truth, pred)) == pytest.approx(0.25, abs=1e-5)
    assert float(sm.metrics.f1_score(truth, pred)) == pytest.approx(0.4, abs=1e-5)
    assert float(sm.losses.dice_loss(truth, pred)) == pytest.approx(0.6, abs=1e-5)
    with_ignored = np.concatenate([truth, np.full((1, 4, 1, 1), 255.0, np.float32)], axis=2)
    pred5 = np.ones((1, 4, 5, 1), np.float32)
    assert float(sm.metrics.iou_score(with_ignored, pred5)) == pytest.approx(0.25, abs=1e-5)
    assert float(sm.metrics.iou_score(np.zeros_like(truth), pred)) < 1e-5
