"""kseg.sm.losses / kseg.sm.metrics / kseg.sm.utils against segmentation_models 1.0.1's formulas,
each expected number computed here in NumPy (or by hand)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kseg import sm

EPS = 1e-7  # keras.config.epsilon()

GT1 = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], np.float32)[None, :, :, None]
PR1 = np.array([[0, 0, 0], [1, 1, 0], [0, 0, 0]], np.float32)[None, :, :, None]
GT0 = np.zeros_like(GT1)


def f(x):
    return float(keras.ops.convert_to_numpy(x))


# ---------------------------------------------------------------- NumPy references

def np_counts(gt, pr, per_image=False, class_indexes=None, threshold=None):
    gt, pr = gt.astype(np.float64), pr.astype(np.float64)
    if class_indexes is not None:
        gt, pr = gt[..., class_indexes], pr[..., class_indexes]
    if threshold is not None:
        pr = (pr > threshold).astype(np.float64)
    axes = (1, 2) if per_image else (0, 1, 2)
    tp = (gt * pr).sum(axes)
    return tp, pr.sum(axes) - tp, gt.sum(axes) - tp


def np_average(score, per_image, class_weights=1.0):
    if per_image:
        score = score.mean(0)
    return float(np.mean(score * np.asarray(class_weights, np.float64)))


def np_iou(gt, pr, smooth=1e-5, per_image=False, class_indexes=None, class_weights=1.0, threshold=None):
    tp, fp, fn = np_counts(gt, pr, per_image, class_indexes, threshold)
    return np_average((tp + smooth) / (tp + fp + fn + smooth), per_image, class_weights)


def np_fscore(gt, pr, beta=1.0, smooth=1e-5, per_image=False, class_indexes=None, class_weights=1.0):
    tp, fp, fn = np_counts(gt, pr, per_image, class_indexes)
    b2 = beta ** 2
    return np_average(((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth), per_image, class_weights)


def one_hot_batch(seed, n=3, h=6, w=5, c=3):
    rng = np.random.default_rng(seed)
    gt = np.eye(c, dtype=np.float32)[rng.integers(0, c, (n, h, w))]
    logits = rng.normal(size=(n, h, w, c))
    pr = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    return gt, pr


# ---------------------------------------------------------------- metrics

def test_hand_computed_binary_scores():
    # GT1 has 4 foreground pixels, PR1 2 of them and nothing else: tp 2, fp 0, fn 2
    m = sm.metrics
    assert f(m.IOUScore(smooth=1e-11)(GT1, PR1)) == pytest.approx(0.5, abs=1e-6)
    assert f(m.FScore(beta=1, smooth=1e-11)(GT1, PR1)) == pytest.approx(2 / 3, abs=1e-6)
    assert f(m.FScore(beta=2, smooth=1e-11)(GT1, PR1)) == pytest.approx(5 / 9, abs=1e-6)  # 5*2 / (5*2 + 4*2)
    assert f(m.Precision(smooth=1e-11)(GT1, PR1)) == pytest.approx(1.0, abs=1e-6)
    assert f(m.Recall(smooth=1e-11)(GT1, PR1)) == pytest.approx(0.5, abs=1e-6)
    assert f(m.precision(GT1, PR1)) == pytest.approx((2 + 1e-5) / (2 + 1e-5), abs=1e-6)
    assert f(m.recall(GT1, PR1)) == pytest.approx((2 + 1e-5) / (4 + 1e-5), abs=1e-6)


def test_smooth_is_used_as_given_nothing_clamped():
    m = sm.metrics
    # empty truth, empty prediction: (0 + s) / (0 + s) = 1 for any smooth, 1e-11 included
    assert f(m.IOUScore(smooth=1e-11)(GT0, GT0)) == pytest.approx(1.0, abs=1e-6)
    assert f(m.FScore(smooth=1e-11)(GT0, GT0)) == pytest.approx(1.0, abs=1e-6)
    # empty truth, 2 predicted pixels: s / (2 + s) -> ~0 for 1e-11, exactly 1/3 for smooth 1
    assert f(m.IOUScore(smooth=1e-11)(GT0, PR1)) < 1e-10
    assert f(sm.losses.JaccardLoss(smooth=1e-11)(GT0, PR1)) == pytest.approx(1.0, abs=1e-6)
    assert f(m.IOUScore(smooth=1.0)(GT0, PR1)) == pytest.approx(1 / 3, abs=1e-6)
    assert f(m.FScore(smooth=1.0)(GT0, PR1)) == pytest.approx(1 / 3, abs=1e-6)  # (0+1) / (0+0+2+1)
    assert f(m.iou_score(GT0, PR1)) == pytest.approx(1e-5 / (2 + 1e-5), rel=1e-3)


def test_binary_target_counts_background_pixels_and_ignores_255_only():
    truth = np.zeros((1, 4, 4, 1), np.float32)
    truth[0, :2, :2] = 1.0
    pred = np.ones_like(truth)
    assert f(sm.metrics.iou_score(truth, pred)) == pytest.approx(np_iou(truth, pred), abs=1e-6)  # 0.25
    assert f(sm.metrics.f1_score(truth, pred)) == pytest.approx(0.4, abs=1e-5)
    # a 255 column: outside [0, 1], so counted in neither truth nor prediction
    truth5 = np.concatenate([truth, np.full((1, 4, 1, 1), 255.0, np.float32)], axis=2)
    pred5 = np.ones((1, 4, 5, 1), np.float32)
    assert f(sm.metrics.iou_score(truth5, pred5)) == pytest.approx(0.25, abs=1e-5)
    assert f(sm.losses.binary_crossentropy(truth5, pred5 * 0.7)) == pytest.approx(
        f(sm.losses.binary_crossentropy(truth, pred * 0.7)), rel=1e-6)


@pytest.mark.parametrize("per_image", [False, True])
def test_iou_and_fscore_on_three_classes_match_numpy(per_image):
    gt, pr = one_hot_batch(0)
    kw = dict(per_image=per_image)
    assert f(sm.metrics.IOUScore(**kw)(gt, pr)) == pytest.approx(np_iou(gt, pr, **kw), rel=1e-5)
    assert f(sm.metrics.FScore(beta=2, **kw)(gt, pr)) == pytest.approx(np_fscore(gt, pr, beta=2, **kw), rel=1e-5)
    assert f(sm.losses.DiceLoss(beta=0.5, **kw)(gt, pr)) == pytest.approx(1 - np_fscore(gt, pr, beta=0.5, **kw),
                                                                          rel=1e-5)
    assert f(sm.losses.JaccardLoss(**kw)(gt, pr)) == pytest.approx(1 - np_iou(gt, pr, **kw), rel=1e-5)


def test_per_image_is_the_mean_of_the_images_scores():
    gt, pr = one_hot_batch(1)
    per_image = f(sm.metrics.IOUScore(per_image=True, threshold=0.4)(gt, pr))
    each = [np_iou(gt[i:i + 1], pr[i:i + 1], threshold=0.4) for i in range(len(gt))]
    assert per_image == pytest.approx(np.mean(each), rel=1e-5)
    assert per_image != pytest.approx(np_iou(gt, pr, threshold=0.4), rel=1e-3)  # the batch figure differs


def test_class_indexes_and_class_weights_multiply_then_average():
    gt, pr = one_hot_batch(2)
    kw = dict(class_indexes=[0, 2], class_weights=[2.0, 0.5])
    want = np_iou(gt, pr, **kw)
    tp, fp, fn = np_counts(gt, pr, class_indexes=[0, 2])
    s = (tp + 1e-5) / (tp + fp + fn + 1e-5)
    assert want == pytest.approx((2.0 * s[0] + 0.5 * s[1]) / 2)  # not (2 s0 + 0.5 s1) / 2.5
    assert f(sm.metrics.IOUScore(**kw)(gt, pr)) == pytest.approx(want, rel=1e-5)
    assert f(sm.losses.DiceLoss(**kw)(gt, pr)) == pytest.approx(1 - np_fscore(gt, pr, **kw), rel=1e-5)
    assert f(sm.metrics.IOUScore(class_indexes=1)(gt, pr)) == pytest.approx(np_iou(gt, pr, class_indexes=[1]),
                                                                            rel=1e-5)


def test_threshold_is_strictly_greater():
    pr = PR1 * 0.5
    assert f(sm.metrics.IOUScore(threshold=0.5, smooth=1e-11)(GT1, pr)) < 1e-10  # 0.5 > 0.5 is false
    assert f(sm.metrics.IOUScore(threshold=0.49, smooth=1e-11)(GT1, pr)) == pytest.approx(0.5, abs=1e-6)


def test_channels_first_gives_the_channels_last_figures():
    gt, pr = one_hot_batch(3)
    want = f(sm.metrics.IOUScore(per_image=True, class_weights=[1, 2, 3])(gt, pr))
    want_ce = f(sm.losses.CategoricalCELoss(class_weights=[1, 2, 3])(gt, pr))
    old = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        gt_cf, pr_cf = gt.transpose(0, 3, 1, 2), pr.transpose(0, 3, 1, 2)
        got = f(sm.metrics.IOUScore(per_image=True, class_weights=[1, 2, 3])(gt_cf, pr_cf))
        got_ce = f(sm.losses.CategoricalCELoss(class_weights=[1, 2, 3])(gt_cf, pr_cf))
    finally:
        keras.config.set_image_data_format(old)
    assert got == pytest.approx(want, rel=1e-6)
    assert got_ce == pytest.approx(want_ce, rel=1e-6)


# ---------------------------------------------------------------- pixel losses

def test_categorical_ce_and_focal_average_over_the_class_axis_too():
    gt, pr = one_hot_batch(4)
    p = np.clip(pr / pr.sum(-1, keepdims=True), EPS, 1 - EPS).astype(np.float64)
    ce = -np.mean(gt * np.log(p))  # mean over N*H*W*3 elements
    per_pixel = -np.sum(gt * np.log(p), axis=-1).mean()  # the usual cross-entropy
    assert ce == pytest.approx(per_pixel / 3)
    assert f(sm.losses.categorical_crossentropy(gt, pr)) == pytest.approx(ce, rel=1e-5)
    keras_ce = float(np.mean(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(gt, pr))))
    assert f(sm.losses.categorical_crossentropy(gt, pr)) == pytest.approx(keras_ce / 3, rel=1e-4)

    w = np.array([1.0, 2.0, 0.5])
    assert f(sm.losses.CategoricalCELoss(class_weights=w)(gt, pr)) == pytest.approx(
        -np.mean(gt * np.log(p) * w), rel=1e-5)
    p02 = np.clip(pr[..., [0, 2]] / pr[..., [0, 2]].sum(-1, keepdims=True), EPS, 1 - EPS)
    assert f(sm.losses.CategoricalCELoss(class_indexes=[0, 2])(gt, pr)) == pytest.approx(
        -np.mean(gt[..., [0, 2]] * np.log(p02)), rel=1e-5)

    q = np.clip(pr, EPS, 1 - EPS).astype(np.float64)
    focal = -np.mean(gt * 0.25 * (1 - q) ** 2 * np.log(q))
    assert f(sm.losses.categorical_focal_loss(gt, pr)) == pytest.approx(focal, rel=1e-5)
    assert f(sm.losses.CategoricalFocalLoss(alpha=0.5, gamma=1.0, class_indexes=[1])(gt, pr)) == pytest.approx(
        -np.mean(gt[..., [1]] * 0.5 * (1 - q[..., [1]]) * np.log(q[..., [1]])), rel=1e-5)


def test_binary_ce_and_focal():
    rng = np.random.default_rng(5)
    gt = (rng.random((2, 5, 4, 1)) > 0.6).astype(np.float32)
    pr = rng.random((2, 5, 4, 1)).astype(np.float32)
    pr[0, 0, 0, 0], pr[0, 0, 1, 0] = 0.0, 1.0  # clipped ends
    p = np.clip(pr, EPS, 1 - EPS).astype(np.float64)
    bce = -np.mean(gt * np.log(p + EPS) + (1 - gt) * np.log(1 - p + EPS))
    assert f(sm.losses.binary_crossentropy(gt, pr)) == pytest.approx(bce, rel=1e-5)
    focal = -np.mean(gt * 0.25 * (1 - p) ** 2 * np.log(p) + (1 - gt) * 0.75 * p ** 2 * np.log(1 - p))
    assert f(sm.losses.binary_focal_loss(gt, pr)) == pytest.approx(focal, rel=1e-5)
    focal2 = -np.mean(gt * 0.4 * (1 - p) ** 3 * np.log(p) + (1 - gt) * 0.6 * p ** 3 * np.log(1 - p))
    assert f(sm.losses.BinaryFocalLoss(alpha=0.4, gamma=3.0)(gt, pr)) == pytest.approx(focal2, rel=1e-5)
    # empty truth: every term is the background term
    assert f(sm.losses.binary_crossentropy(np.zeros_like(gt), pr)) == pytest.approx(
        -np.mean(np.log(1 - p + EPS)), rel=1e-5)


def test_composed_losses_are_plain_sums_and_products():
    gt, pr = one_hot_batch(6)
    L = sm.losses
    cce, focal = f(L.categorical_crossentropy(gt, pr)), f(L.categorical_focal_loss(gt, pr))
    dice, jac = f(L.dice_loss(gt, pr)), f(L.jaccard_loss(gt, pr))
    assert f(L.cce_dice_loss(gt, pr)) == pytest.approx(cce + dice, rel=1e-6)
    assert f(L.cce_jaccard_loss(gt, pr)) == pytest.approx(cce + jac, rel=1e-6)
    assert f(L.categorical_focal_dice_loss(gt, pr)) == pytest.approx(focal + dice, rel=1e-6)
    assert f(L.categorical_focal_jaccard_loss(gt, pr)) == pytest.approx(focal + jac, rel=1e-6)
    weighted = 0.5 * L.dice_loss + L.categorical_focal_loss * 3
    assert weighted.name == "0.5dice_loss_plus_3focal_loss"
    assert f(weighted(gt, pr)) == pytest.approx(0.5 * dice + 3 * focal, rel=1e-6)

    bgt, bpr = gt[..., :1], pr[..., :1]
    bce, bfocal = f(L.binary_crossentropy(bgt, bpr)), f(L.binary_focal_loss(bgt, bpr))
    bdice, bjac = f(L.dice_loss(bgt, bpr)), f(L.jaccard_loss(bgt, bpr))
    assert f(L.bce_dice_loss(bgt, bpr)) == pytest.approx(bce + bdice, rel=1e-6)
    assert f(L.bce_jaccard_loss(bgt, bpr)) == pytest.approx(bce + bjac, rel=1e-6)
    assert f(L.binary_focal_dice_loss(bgt, bpr)) == pytest.approx(bfocal + bdice, rel=1e-6)
    assert f(L.binary_focal_jaccard_loss(bgt, bpr)) == pytest.approx(bfocal + bjac, rel=1e-6)

    with pytest.raises(ValueError):
        L.dice_loss + 1
    with pytest.raises(ValueError):
        L.dice_loss * "2"


def test_names_are_segmentation_models_names():
    L, M = sm.losses, sm.metrics
    names = {
        L.jaccard_loss: "jaccard_loss", L.dice_loss: "dice_loss", L.binary_focal_loss: "binary_focal_loss",
        L.categorical_focal_loss: "focal_loss", L.binary_crossentropy: "binary_crossentropy",
        L.categorical_crossentropy: "categorical_crossentropy",
        L.bce_dice_loss: "binary_crossentropy_plus_dice_loss",
        L.bce_jaccard_loss: "binary_crossentropy_plus_jaccard_loss",
        L.cce_dice_loss: "categorical_crossentropy_plus_dice_loss",
        L.cce_jaccard_loss: "categorical_crossentropy_plus_jaccard_loss",
        L.binary_focal_dice_loss: "binary_focal_loss_plus_dice_loss",
        L.binary_focal_jaccard_loss: "binary_focal_loss_plus_jaccard_loss",
        L.categorical_focal_dice_loss: "focal_loss_plus_dice_loss",
        L.categorical_focal_jaccard_loss: "focal_loss_plus_jaccard_loss",
        M.iou_score: "iou_score", M.f1_score: "f1-score", M.f2_score: "f2-score", M.precision: "precision",
        M.recall: "recall", M.FScore(beta=3): "f3-score", M.IOUScore(name="miou"): "miou",
        2 * L.dice_loss: "2dice_loss",
    }
    for obj, name in names.items():
        assert obj.name == name and obj.__name__ == name
    loss = L.DiceLoss()
    loss.name = "mine"
    assert loss.__name__ == "mine"
    assert sm.__version__ == "1.0.1"


def test_functional_namespace_has_segmentation_models_signatures():
    gt, pr = one_hot_batch(7)
    F = sm.losses.F
    assert f(F.iou_score(gt, pr, class_weights=[1, 2, 3], per_image=True, backend=None)) == pytest.approx(
        np_iou(gt, pr, class_weights=[1, 2, 3], per_image=True), rel=1e-5)
    assert f(F.f_score(gt, pr, beta=2)) == pytest.approx(np_fscore(gt, pr, beta=2), rel=1e-5)
    assert f(sm.metrics.F.precision(gt, pr)) == pytest.approx(f(sm.metrics.precision(gt, pr)))
    assert f(F.categorical_crossentropy(gt, pr)) == pytest.approx(f(sm.losses.categorical_crossentropy(gt, pr)))


# ---------------------------------------------------------------- in Keras

def _tiny(channels=3, activation="softmax", name="tiny"):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(channels, 1, activation=activation)(x)
    return keras.Model(inp, x, name=name)


def test_compile_fit_save_and_load(tmp_path):
    rng = np.random.default_rng(8)
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (4, 8, 8))]
    model = _tiny()
    model.compile("adam", loss=0.5 * sm.losses.categorical_focal_loss + sm.losses.dice_loss,
                  metrics=[sm.metrics.iou_score, sm.metrics.FScore(beta=2, class_indexes=[1, 2]),
                           sm.metrics.precision, sm.metrics.recall])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "iou_score", "f2-score", "precision", "recall"}
    pred = model.predict(x, verbose=0)
    want_loss = 0.5 * f(sm.losses.categorical_focal_loss(y, pred)) + f(sm.losses.dice_loss(y, pred))
    values = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert values["loss"] == pytest.approx(want_loss, rel=1e-4)
    assert values["iou_score"] == pytest.approx(np_iou(y, pred), rel=1e-4)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.loss.name == "0.5focal_loss_plus_dice_loss"
    again = loaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert again == pytest.approx(values, rel=1e-6)


def test_binary_losses_train_a_sigmoid_model():
    rng = np.random.default_rng(9)
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    y = (x[..., :1] > 0.5).astype(np.float32)
    model = _tiny(1, "sigmoid")
    model.compile("adam", loss=sm.losses.bce_jaccard_loss, metrics=[sm.metrics.IOUScore(threshold=0.5)])
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert set(history.history) == {"loss", "iou_score"}


def test_set_regularization_returns_a_regularized_copy():
    model = _tiny()
    model.layers[2].beta.assign(np.full(4, 0.5, np.float32))  # l1(beta) > 0 needs beta != 0
    x = np.random.default_rng(10).random((2, 8, 8, 3)).astype(np.float32)
    reg = sm.utils.set_regularization(model, kernel_regularizer=keras.regularizers.l2(0.1),
                                      bias_regularizer="l1", gamma_regularizer=keras.regularizers.l1(1.0),
                                      beta_regularizer=keras.regularizers.l2(1.0))
    assert model.losses == []  # the original is left alone
    np.testing.assert_allclose(reg.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    conv1, bn, conv2 = reg.layers[1], reg.layers[2], reg.layers[3]
    kernels = sum(0.1 * np.sum(np.square(c.kernel.numpy())) for c in (conv1, conv2))
    biases = sum(0.01 * np.sum(np.abs(c.bias.numpy())) for c in (conv1, conv2))
    want = kernels + biases + np.sum(np.abs(bn.gamma.numpy())) + np.sum(np.square(bn.beta.numpy()))
    assert sum(float(v) for v in reg.losses) == pytest.approx(want, rel=1e-5)
    assert reg.get_config()["layers"][1]["config"]["kernel_regularizer"] is not None

    def zero_loss(gt, pr):
        return pr * 0

    act = sm.utils.set_regularization(model, activity_regularizer=keras.regularizers.l2(1.0))
    model.compile("adam", loss=zero_loss)
    act.compile("adam", loss=zero_loss)
    y = np.zeros((2, 8, 8, 3), np.float32)
    assert model.test_on_batch(x, y) == 0
    out1 = keras.Model(model.input, model.layers[1].output).predict(x, verbose=0)
    want_act = np.sum(np.square(out1)) / 2 + np.sum(np.square(model.predict(x, verbose=0))) / 2
    assert act.test_on_batch(x, y) == pytest.approx(want_act, rel=1e-4)  # both convolutions, per-sample mean


def test_set_trainable_unfreezes_and_recompiles():
    model = _tiny()
    model.layers[1].trainable = False
    model.compile("adam", loss=sm.losses.dice_loss, metrics=[sm.metrics.iou_score])
    before = model.layers[1].kernel.numpy().copy()
    sm.utils.set_trainable(model)
    assert all(layer.trainable for layer in model.layers)
    x = np.random.default_rng(11).random((2, 8, 8, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.random.default_rng(12).integers(0, 3, (2, 8, 8))]
    history = model.fit(x, y, epochs=1, verbose=0)
    assert "iou_score" in history.history
    assert not np.allclose(model.layers[1].kernel.numpy(), before)
