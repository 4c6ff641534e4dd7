"""The accuracy toolkit: 5-fold split, augmentation, schedules, class weights, freezing, recipes, native evaluation."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, tiny_model

from kseg.data import augment, fold_indices, iccv09_folds, load_iccv09, split_datasets
from kseg.errors import KsegError


# --------------------------------------------------------------------------- folds

def test_folds_are_five_disjoint_143s_covering_every_image():
    folds = iccv09_folds()
    assert [len(f) for f in folds] == [143] * 5
    ids = [i for f in folds for i in f]
    assert len(set(ids)) == 715
    assert all(len(i) == 7 and i.isdigit() for i in ids)


def test_fold_indices_pick_the_fold_for_validation():
    folds = iccv09_folds()
    ids = sorted(i for f in folds for i in f)
    for k in range(5):
        train, val = fold_indices(ids, k)
        assert len(train) == 572 and len(val) == 143
        assert {ids[i] for i in val} == set(folds[k])
        assert not set(train) & set(val)


def test_fold_errors_are_clear():
    ids = sorted(i for f in iccv09_folds() for i in f)
    with pytest.raises(KsegError, match="bad fold 5"):
        fold_indices(ids, 5)
    with pytest.raises(KsegError, match="not in kseg's iccv09 folds"):
        fold_indices(["0000000", *ids], 0)
    only_fold0 = sorted(iccv09_folds()[0])
    with pytest.raises(KsegError, match="leaves 0 training"):
        fold_indices(only_fold0, 0)


@pytest.mark.e2e
def test_fold_split_on_real_images(real_iccv09):
    ds = load_iccv09(real_iccv09, mask="regions")
    in_fold = [k for k in range(5) if set(ds.ids) & set(iccv09_folds()[k])]
    k = in_fold[0]
    train, val, info = split_datasets(ds, size=64, batch_size=2, fold=k)
    assert {ds.ids[i] for i in info["val_idx"]} == set(ds.ids) & set(iccv09_folds()[k])
    assert len(info["train_idx"]) + len(info["val_idx"]) == len(ds)


# --------------------------------------------------------------------------- augmentation

def _pair(h=32, w=40):
    rng = np.random.default_rng(0)
    img = tf.constant(rng.uniform(0, 255, (h, w, 3)), tf.float32)
    lab = rng.integers(-1, 5, (h, w, 1)).astype(np.int8)
    return img, tf.constant(lab)


@pytest.mark.parametrize("seed", range(6))
def test_scale_crop_keeps_size_and_never_invents_label_values(seed):
    img, lab = _pair()
    out_img, out_lab = augment.scale_crop(img, lab, tf.constant([seed, 7], tf.int64))
    assert out_img.shape == img.shape and out_lab.shape == lab.shape and out_lab.dtype == lab.dtype
    assert set(np.unique(out_lab.numpy())) <= set(np.unique(lab.numpy())) | {-1}
    again = augment.scale_crop(img, lab, tf.constant([seed, 7], tf.int64))
    np.testing.assert_array_equal(out_lab.numpy(), again[1].numpy())


def test_scale_crop_moves_image_and_mask_together():
    # a label map that encodes each pixel's colour: after any scale/crop the two must still agree
    h, w = 32, 48
    lab = (np.arange(h * w).reshape(h, w) % 5).astype(np.int8)
    img = np.repeat((lab.astype(np.float32) * 50.0)[..., None], 3, -1)
    for seed in range(8):
        oi, ol = augment.scale_crop(tf.constant(img), tf.constant(lab[..., None]), tf.constant([seed, 1], tf.int64))
        oi, ol = oi.numpy()[..., 0], ol.numpy()[..., 0]
        inside = ol >= 0
        # nearest-neighbour labels vs bilinear image: compare where the image is flat (a 3x3 neighbourhood agrees)
        flat = np.zeros_like(inside)
        flat[1:-1, 1:-1] = np.all([np.roll(np.roll(ol, dy, 0), dx, 1)[1:-1, 1:-1] == ol[1:-1, 1:-1]
                                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        sel = inside & flat
        if sel.any():
            np.testing.assert_allclose(oi[sel], ol[sel] * 50.0, atol=1.0)


def test_scale_down_pads_with_unknown_labels():
    img, lab = _pair()
    lab = tf.zeros_like(lab) + 3
    found = False
    for seed in range(20):
        _, out = augment.scale_crop(img, lab, tf.constant([seed, 0], tf.int64), scale_range=(0.5, 0.6))
        vals = set(np.unique(out.numpy()))
        assert vals == {-1, 3}
        found = True
    assert found


def test_color_jitter_changes_colours_not_labels():
    img, lab = _pair()
    out_img, out_lab = augment.color_jitter(img, lab, tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(out_lab.numpy(), lab.numpy())
    assert 0.0 <= float(tf.reduce_min(out_img)) and float(tf.reduce_max(out_img)) <= 255.0
    assert float(tf.reduce_mean(tf.abs(out_img - img))) > 1.0


def test_augmentation_names():
    assert augment.get("none") is None and augment.get("flip") is augment.hflip
    strong = augment.get("strong")
    img, lab = _pair()
    a = strong(img, lab, tf.constant([1, 2], tf.int64))
    b = augment.get("scale,flip,color")(img, lab, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    with pytest.raises(KsegError, match="unknown augmentation 'rotate'"):
        augment.get("flip,rotate")


# --------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", ["cosine", "poly", "constant"])
def test_schedules_warm_up_then_decay(kind):
    from kseg.schedules import make

    s = make(kind, 1e-3, total_steps=110, warmup_steps=10)
    lr = [float(s(i)) for i in range(111)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3)
    assert all(a <= b + 1e-12 for a, b in zip(lr[:10], lr[1:10]))  # rising
    assert lr[10] == pytest.approx(1e-3)
    end = {"cosine": 1e-5, "poly": 0.0, "constant": 1e-3}[kind]
    assert lr[110] == pytest.approx(end, abs=1e-9)
    if kind == "cosine":
        assert lr[60] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-4)
    if kind == "poly":
        assert lr[60] == pytest.approx(1e-3 * 0.5 ** 0.9, rel=1e-4)


def test_schedule_round_trips_through_keras_serialization():
    import keras

    from kseg.schedules import WarmupDecay, make

    assert make("constant", 0.01, 100) == 0.01
    s = make("poly", 0.01, 100, 5)
    back = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert isinstance(back, WarmupDecay) and float(back(50)) == pytest.approx(float(s(50)))
    with pytest.raises(KsegError, match="unknown --schedule"):
        make("step", 0.01, 100)


# --------------------------------------------------------------------------- class weights, recipes

def test_class_weights_from_training_labels():
    from kseg.train import class_weights

    labels = [np.array([[0, 0, 0, 0, 0, 0, 1, 1], [2, 2, 2, 2, -1, -1, -1, -1]])]  # freq 6/12, 2/12, 4/12
    bal = class_weights("balanced", labels, 3)
    np.testing.assert_allclose(bal, [12 / (3 * 6), 12 / (3 * 2), 12 / (3 * 4)])
    med = class_weights("median", labels, 3)
    np.testing.assert_allclose(med, [(4 / 12) / (6 / 12), (4 / 12) / (2 / 12), 1.0])
    sq = class_weights("sqrt", labels, 3)
    assert np.mean(sq) == pytest.approx(1.0) and sq[1] > sq[2] > sq[0]
    assert class_weights("none", labels, 3) is None
    assert class_weights("1,2,3", labels, 3) == [1.0, 2.0, 3.0]
    absent = class_weights("median", labels, 4)
    assert absent[3] == 0.0
    with pytest.raises(KsegError, match="give 3 non-negative numbers"):
        class_weights("1,2", labels, 3)


def test_recipe_sets_options_and_the_command_line_wins():
    from kseg.recipes import RECIPES
    from kseg.train import parse_args

    args = parse_args(["--recipe", "regions-mobilenetv2"])
    r = RECIPES["regions-mobilenetv2"]
    assert (args.mask, args.model, args.backbone, args.encoder_weights) == ("regions", r["model"], "mobilenetv2",
                                                                            "imagenet")
    assert args.fold == 0 and args.schedule == "cosine" and args.augment == "strong" and args.size == (256, 320)
    assert args.eval_scales == (0.5, 0.75, 1.0, 1.25, 1.5) and args.eval_flip
    assert parse_args(["--recipe", "surfaces-mobilenetv2"]).eval_scales == (0.75, 1.0, 1.25)
    args = parse_args(["--recipe", "regions-mobilenetv2", "--epochs", "2", "--fold", "3", "--size", "128"])
    assert args.epochs == 2 and args.fold == 3 and args.size == (128, 128) and args.mask == "regions"
    scratch = parse_args(["--recipe", "regions-scratch"])
    assert scratch.encoder_weights is None and scratch.size == (224, 288) and scratch.epochs == 70
    for name, mask, epochs in (("surfaces-fast", "surfaces", 4), ("regions-fast", "regions", 8)):
        fast = parse_args(["--recipe", name])
        assert (fast.mask, fast.model, fast.backbone, fast.encoder_weights) == (mask, "deeplabv3plus", "mobilenetv2",
                                                                                "imagenet")
        assert fast.size == (192, 256) and fast.epochs == epochs and fast.augment == "flip" and fast.warmup == 0.3
        assert fast.eval_scales == (1.0,) and not fast.eval_flip  # scored at native resolution, no TTA
    segformer = parse_args(["--recipe", "regions-segformer"])
    assert (segformer.model, segformer.backbone, segformer.encoder_weights) == ("segformer", "mit_b0", "imagenet")
    assert (segformer.lr, segformer.encoder_lr_mult, segformer.weight_decay, segformer.schedule) == (6e-4, 0.1, 1e-2,
                                                                                                    "poly")
    hrnet = parse_args(["--recipe", "regions-hrnet"])
    assert (hrnet.model, hrnet.backbone, hrnet.encoder_weights, hrnet.mask) == ("hrnet", "hrnet_w18_small_v2",
                                                                                "imagenet", "regions")


@pytest.mark.parametrize("argv,message", [
    (["--recipe", "nope"], "unknown --recipe 'nope'"),
    (["--fold", "5"], "invalid choice"),
    (["--augment", "rotate"], "unknown augmentation 'rotate'"),
    (["--weight-decay", "0.1"], "needs --optimizer adamw or sgd"),
    (["--data-format", "folder", "--data", "x", "--fold", "1"], "--fold picks kseg's iccv09"),
    (["--bn-momentum", "1.5"], "bad --bn-momentum"),
    (["--eval-scales", "0,1"], "bad --scales"),
])
def test_bad_accuracy_options_are_one_line_errors(argv, message, capsys):
    from kseg.train import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err


def test_eval_output_stride_that_cannot_apply_fails_before_training(real_iccv09, tmp_path, capsys):
    from kseg.train import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(real_iccv09), "--model", "unet", "--backbone", "resnet18", "--size", "64", "--epochs", "1",
              "--eval-output-stride", "8", "--out", str(out), "--verbose", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kseg: error: cannot change the output stride of 'unet_resnet18'")
    assert not list(out.glob("*.keras")) and not (out / "history.csv").exists()  # nothing trained


# --------------------------------------------------------------------------- freeze then unfreeze

def test_freeze_epochs_keep_the_encoder_fixed_then_train_it():
    import keras

    from kseg import models
    from kseg.train import Unfreeze

    keras.utils.set_random_seed(0)
    model = models.build("unet", backbone="resnet18", num_classes=3, input_shape=(64, 64, 3), encoder_freeze=True,
                         decoder_filters=(16, 8, 8, 8, 8))
    thaw = [la for la in model.layers if not la.trainable]
    assert thaw
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    for la in thaw:
        la.trainable = True
    model.optimizer.build(model.trainable_variables)
    for la in thaw:
        la.trainable = False
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    y = keras.utils.to_categorical(np.random.default_rng(1).integers(0, 3, (4, 64, 64)), 3)
    enc = [w for la in thaw for w in la.weights]
    before = [w.numpy().copy() for w in enc]
    cb = Unfreeze(thaw, at=1)
    model.fit(x, y, epochs=1, batch_size=2, verbose=0, callbacks=[cb])
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, enc))  # frozen: BN statistics too
    model.fit(x, y, initial_epoch=1, epochs=2, batch_size=2, verbose=0, callbacks=[cb])
    assert all(la.trainable for la in thaw)
    assert sum(not np.array_equal(a, w.numpy()) for a, w in zip(before, enc)) > len(enc) // 2


@pytest.mark.parametrize("model_name,backbone", [("unet", "resnet18"), ("deeplabv3plus", "mobilenetv2")])
def test_freeze_encoder_bn_trains_the_encoder_but_not_its_batch_norm(model_name, backbone):
    """Unfreezing with keep_bn_frozen: encoder convolutions train, encoder BatchNorm (statistics, scale,
    offset) stays as built, decoder BatchNorm still learns. resnet18's encoder is inline, mobilenetv2's nested."""
    import keras

    from kseg import models
    from kseg.models.layers import batch_norm_layers
    from kseg.train import Unfreeze, thaw_encoder

    keras.utils.set_random_seed(0)
    model = models.build(model_name, backbone=backbone, num_classes=3, input_shape=(64, 64, 3), encoder_freeze=True)
    thaw = [la for la in model.layers if not la.trainable]
    enc_bn = {id(b) for la in thaw for b in batch_norm_layers(la)}
    dec_bn = [b for b in batch_norm_layers(model) if id(b) not in enc_bn]
    assert enc_bn and dec_bn
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    thaw_encoder(thaw, keep_bn_frozen=True)
    model.optimizer.build(model.trainable_variables)
    for la in thaw:
        la.trainable = False
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    y = keras.utils.to_categorical(np.random.default_rng(1).integers(0, 3, (4, 64, 64)), 3)
    enc = {w.path: w for la in thaw for w in la.weights}
    bn_paths = {w.path for la in thaw for b in batch_norm_layers(la) for w in b.weights}
    before = {p: w.numpy().copy() for p, w in enc.items()}
    dec_before = [w.numpy().copy() for b in dec_bn for w in b.non_trainable_weights]
    cb = Unfreeze(thaw, at=1, keep_bn_frozen=True)
    model.fit(x, y, epochs=1, batch_size=2, verbose=0, callbacks=[cb])
    assert all(np.array_equal(before[p], w.numpy()) for p, w in enc.items())
    model.fit(x, y, initial_epoch=1, epochs=2, batch_size=2, verbose=0, callbacks=[cb])
    changed = {p for p, w in enc.items() if not np.array_equal(before[p], w.numpy())}
    assert not changed & bn_paths  # encoder BatchNorm: not one value moved
    kernels = {p for p in enc if p.endswith("kernel")}
    assert len(changed & kernels) > len(kernels) // 2  # the rest of the encoder trained
    assert any(not np.array_equal(a, w.numpy())
               for a, w in zip(dec_before, [w for b in dec_bn for w in b.non_trainable_weights]))
    assert all(la.trainable for la in thaw if id(la) not in enc_bn)
    assert not any(b.trainable for la in thaw for b in batch_norm_layers(la))


def test_freeze_encoder_bn_from_the_command_line(tiny_iccv09, tmp_path, capsys):
    """--freeze-encoder-bn without --freeze-epochs: the encoder trains from the start, its BatchNorm keeps
    the statistics it was built with (0 and 1 here, no pretrained weights, which the run warns about)."""
    import keras

    from kseg.export import load_model
    from kseg.models.layers import batch_norm_layers
    from kseg.train import main

    out = tmp_path / "run"
    assert main(["--data", str(tiny_iccv09), "--mask", "surfaces", "--model", "unet", "--backbone", "resnet18",
                 "--size", "64", "--epochs", "1", "--batch-size", "2", "--freeze-encoder-bn", "--no-export",
                 "--out", str(out), "--verbose", "0"]) == 0
    assert "--freeze-encoder-bn without pretrained encoder weights" in capsys.readouterr().err
    model = load_model(out / "best.keras")
    built = keras.models.clone_model(model)  # same graph, fresh variables: the statistics as built
    bns = batch_norm_layers(model)
    enc = [b for b in bns if not b.trainable]
    assert enc and len(enc) < len(bns)
    for b in enc:
        ref = built.get_layer(b.name)
        assert all(np.array_equal(w.numpy(), r.numpy()) for w, r in zip(b.weights, ref.weights)), b.name
    trained = [b for b in bns if b.trainable]
    assert any(not np.allclose(b.moving_mean.numpy(), 0) for b in trained)
    enc_convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D) and la.trainable]
    assert enc_convs


def test_bn_momentum_reaches_nested_encoders():
    import keras

    from kseg import models
    from kseg.train import set_bn_momentum

    model = models.build("deeplabv3plus", backbone="mobilenetv2", num_classes=3, input_shape=(64, 64, 3))
    n = set_bn_momentum(model, 0.9)
    # counted independently of kseg's walk: one moving_mean variable per BatchNormalization layer
    assert n == sum(w.path.endswith("moving_mean") for w in model.weights) > 50
    encoder = model.get_layer("mobilenetv2_encoder")
    nested = [la for la in encoder.layers if isinstance(la, keras.layers.BatchNormalization)]
    top = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert nested and top and all(b.momentum == 0.9 for b in nested + top)


# --------------------------------------------------------------------------- native-resolution evaluation

def test_native_evaluation_scores_every_known_pixel_at_the_image_size(tiny_iccv09):
    from kseg.evaluate import evaluate_native

    ds = load_iccv09(tiny_iccv09, mask="surfaces")
    model = tiny_model(size=(64, 64), classes=3)
    rep = evaluate_native(model, ds.image_paths, ds.labels, ds.class_names, scales=(0.5, 1.0), flip=True)
    known = sum(int((lab >= 0).sum()) for lab in ds.labels)
    assert int(np.sum(rep["confusion_matrix"])) == known
    assert rep["images"] == len(ds) and 0.0 <= rep["pixel_accuracy"] <= 1.0
    # a perfect "model" scores 1.0: feed the truth through as the prediction
    from kseg.evaluate import evaluate
    from kseg.metrics import scores

    truth = iter(ds.labels)

    def oracle(images):
        lab = next(truth)
        return np.eye(3)[np.where(lab < 0, 0, lab)][None]

    from kseg.evaluate import native_batches

    res = evaluate(oracle, native_batches(ds.image_paths, ds.labels), 3, worst=0)
    assert scores(res["cm"], list(ds.class_names))["pixel_accuracy"] == 1.0


def test_train_cli_with_fold_features_end_to_end(real_iccv09, tmp_path, run_model):
    """A short run with every accuracy option writes the native TTA scores (at output stride 8) into metrics.json."""
    from kseg.train import main
    seen = run_model

    out = tmp_path / "run"
    ds = load_iccv09(real_iccv09, mask="surfaces")
    fold = next(k for k in range(5) if set(ds.ids) & set(iccv09_folds()[k]))
    code = main(["--data", str(real_iccv09), "--mask", "surfaces", "--model", "deeplabv3plus", "--backbone", "resnet18",
                 "--size", "64x96", "--epochs", "2", "--batch-size", "4", "--fold", str(fold), "--augment", "strong",
                 "--schedule", "cosine", "--warmup", "0.5", "--optimizer", "adamw", "--weight-decay", "1e-4",
                 "--class-weights", "median", "--freeze-epochs", "1", "--bn-momentum", "0.9", "--ema", "0.9",
                 "--eval-scales", "0.5,1", "--eval-flip", "--eval-output-stride", "8", "--no-export", "--out", str(out),
                 "--verbose", "0"])
    assert code == 0
    optimizer = seen["model"].optimizer
    assert optimizer.per_variable_steps  # the encoder starts late
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fold"] == fold
    # the options it ran with are recorded, and the accuracy bench reports them without --recipe
    assert metrics["options"]["class_weights"] == "median" and metrics["options"]["freeze_epochs"] == 1
    assert metrics["options"]["ema"] == 0.9
    assert metrics["options"]["size"] == [64, 96] and metrics["options"]["eval_scales"] == [0.5, 1.0]
    bench = subprocess.run([sys.executable, str(REPO / "bench" / "accuracy.py"), "--existing", str(out),
                            "--results", str(tmp_path / "results")],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr[-2000:]
    row = json.loads(bench.stdout)["runs"][0]
    assert row["options"] == metrics["options"] and row["fold"] == fold
    assert row["native"]["miou"] == round(metrics["native"]["miou"], 4) and row["native"]["output_stride"] == 8
    assert json.loads((tmp_path / "results" / "accuracy-custom.json").read_text()) == json.loads(bench.stdout)
    native = metrics["native"]
    assert native["scales"] == [0.5, 1.0] and native["flip"] is True and native["output_stride"] == 8
    val_ids = set(ds.ids) & set(iccv09_folds()[fold])
    known = sum(int((lab >= 0).sum()) for i, lab in zip(ds.ids, ds.labels) if i in val_ids)
    assert int(np.sum(native["confusion_matrix"])) == known
    assert math.isfinite(native["miou"])


def test_evaluate_cli_native_with_tta(tiny_iccv09, tmp_path):
    from kseg.evaluate import main

    model = tiny_model(size=(64, 64), classes=3)
    path = tmp_path / "m.keras"
    model.save(path)
    out = tmp_path / "ev"
    assert main(["--model", str(path), "--data", str(tiny_iccv09), "--mask", "surfaces", "--split", "all",
                 "--scales", "0.5,1", "--flip", "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["native"] is True and rep["scales"] == [0.5, 1.0] and rep["flip"] is True
    ds = load_iccv09(tiny_iccv09, mask="surfaces")
    assert int(np.sum(rep["confusion_matrix"])) == sum(int((lab >= 0).sum()) for lab in ds.labels)
