"""The tf.data pipeline: decode, resize (images bilinear, labels nearest), cache, one-hot, batch.

Conventions (see DESIGN.md):

- images are float32 RGB in [0, 255]; the model does its own preprocessing;
- label maps hold class ids with -1 for unknown; one-hot targets encode an
  unknown pixel as an all-zero row, sparse targets as :data:`IGNORE_INDEX`;
  binary targets (a dataset of background 0 and foreground 1, for a model with
  one sigmoid output) have one channel: 0, 1, or :data:`IGNORE_INDEX`;
- height and width are multiples of 32.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kseg.errors import KsegError
# the size rule lives in kseg.shapes, the label forms in kseg.labels; their names stay importable from here
from kseg.labels import IGNORE_INDEX, to_binary, to_one_hot, to_sparse  # noqa: F401
from kseg.shapes import MULTIPLE, SizeError, check_size, nearest_multiples  # noqa: F401


def split_indices(n: int, val_split: float = 0.2, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, deterministic train/validation split of ``range(n)``."""
    if not 0.0 <= val_split < 1.0:
        raise KsegError(f"bad validation split {val_split}: give a fraction in [0, 1), e.g. 0.2")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_split))
    if val_split > 0 and n_val == 0 and n > 1:
        n_val = 1
    if n - n_val < 1:
        raise KsegError(f"validation split {val_split} leaves no training images out of {n}")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


FOLDS_FILE = "iccv09_folds.json"
NUM_FOLDS = 5


def iccv09_folds() -> list[list[str]]:
    """The 5 fixed folds of iccv09 (143 image ids each) shipped with kseg, as the literature's 5-fold protocol."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).with_name(FOLDS_FILE)).read_text())["folds"]


def fold_indices(ids, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions in ``ids`` for iccv09 fold ``fold`` (0-4): the fold's images validate.

    Ids absent from the shipped folds (a subset with ``limit``, another dataset) are
    an error only if none of ``ids`` belongs to the fold or none is left to train on.
    """
    if not isinstance(fold, (int, np.integer)) or not 0 <= int(fold) < NUM_FOLDS:
        raise KsegError(f"bad fold {fold!r}: give 0 to {NUM_FOLDS - 1}")
    folds = iccv09_folds()
    known = {i for f in folds for i in f}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise KsegError(f"image {unknown[0]!r} is not in kseg's iccv09 folds: --fold works on iccv09 only "
                        f"(use --val-split for other data)")
    val_ids = set(folds[int(fold)])
    val = np.array([k for k, i in enumerate(ids) if i in val_ids], np.int64)
    train = np.array([k for k, i in enumerate(ids) if i not in val_ids], np.int64)
    if len(val) == 0 or len(train) == 0:
        raise KsegError(f"fold {fold} leaves {len(train)} training and {len(val)} validation images "
                        f"of {len(ids)}: use more images")
    return train, val


def _ragged_labels(labels: list[np.ndarray]):
    flat = np.concatenate([lab.ravel() for lab in labels]).astype(np.int8)
    lengths = np.array([lab.size for lab in labels], np.int64)
    shapes = np.array([lab.shape for lab in labels], np.int32).reshape(-1, 2)
    return tf.RaggedTensor.from_row_lengths(flat, lengths), shapes


def decode_image(path):
    """Read and decode an image file to uint8 RGB (JPEG, PNG, BMP, GIF's first frame)."""
    data = tf.io.read_file(path)
    img = tf.io.decode_image(data, channels=3, expand_animations=False)
    img.set_shape([None, None, 3])
    return img


def repeat_factors(labels, num_classes: int, threshold: float) -> np.ndarray:
    """Per-image repeat factors of LVIS's repeat-factor sampling (Gupta et al. 2019; detectron2's
    ``RepeatFactorTrainingSampler``), for rare classes.

    ``f_c`` is the fraction of the images in ``labels`` that contain class ``c``; the class factor is
    ``r_c = max(1, sqrt(threshold / f_c))`` and an image's factor is the largest ``r_c`` of the classes in it
    (unknown pixels count for none). ``threshold`` 0 gives all ones; e.g. 0.5 on iccv09 regions fold 0 gives
    mountain (in 11% of the images) 2.13 and water (14%) 1.89.
    """
    return image_repeat_factors(*class_repeat_factors(labels, num_classes, threshold))


def image_repeat_factors(present: np.ndarray, per_class: np.ndarray) -> np.ndarray:
    """Each image's factor: the largest of its classes' factors, 1 for an image with no known class."""
    return np.where(present, per_class, 1.0).max(1, initial=1.0)


def class_repeat_factors(labels, num_classes: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(present, r)``: which classes each label map holds (``len(labels) x num_classes`` booleans) and each
    class's repeat factor ``r_c = max(1, sqrt(threshold / f_c))`` (1 for a class in no image); see
    :func:`repeat_factors`."""
    if not (threshold >= 0 and np.isfinite(threshold)):
        raise KsegError(f"bad repeat threshold {threshold}: give a fraction of images >= 0, e.g. 0.5")
    present = np.zeros((len(labels), num_classes), bool)
    for i, lab in enumerate(labels):
        lab = np.asarray(lab).ravel()
        present[i, np.unique(lab[(lab >= 0) & (lab < num_classes)]).astype(np.int64)] = True
    freq = present.mean(0) if len(labels) else np.zeros(num_classes)
    ratio = np.divide(threshold, freq, out=np.ones(num_classes), where=freq > 0)  # a class in no image: 1
    return present, np.maximum(np.sqrt(ratio), 1.0)


def make_dataset(image_paths, labels, num_classes: int, size=(224, 224), batch_size: int = 16,
                 sparse: bool = False, training: bool = False, augment=None, seed: int = 42,
                 cache: bool = True, repeat: np.ndarray | None = None, binary: bool = False) -> tf.data.Dataset:
    """Build a ``tf.data.Dataset`` of ``(image, target)`` batches.

    ``image_paths``: image files; ``labels``: matching int label maps (-1 unknown)
    at each image's own size. Images are resized bilinearly and labels by
    nearest neighbour to ``size``; decoding runs in parallel and the resized
    pairs are cached in memory. With ``training=True`` the pairs are then
    shuffled (seeded, a new order each pass), repeated without end (train with
    ``steps_per_epoch = ceil(n / batch_size)``) and augmented: ``augment`` is a
    callable ``(image, label, seed) -> (image, label)`` from
    :mod:`kseg.data.augment`, called with a distinct stateless seed per sample,
    so the same ``seed`` gives the same stream. ``repeat`` (training only): one
    repeat factor per image (see :func:`repeat_factors`); each pass then holds
    image ``i`` ``floor(r_i)`` times plus once more with probability
    ``r_i - floor(r_i)`` (seeded), reshuffled so copies are not adjacent; the
    stream is still cut into epochs of ``ceil(n / batch_size)`` steps, so rare
    images are seen more often for the same training time. Finally targets are
    encoded (one-hot or sparse; with ``binary=True`` one channel of 0 / 1 with
    :data:`IGNORE_INDEX` for unknown pixels, see :func:`to_binary`), batched and prefetched.
    """
    h, w = check_size(size)
    repeat = _check_inputs(image_paths, labels, batch_size, repeat)
    ragged, shapes = _ragged_labels(labels)
    ds = tf.data.Dataset.from_tensor_slices((list(map(str, image_paths)), ragged, shapes))
    ds = ds.map(_loader(h, w), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    if training:
        ds = _training_stream(ds, len(image_paths), repeat, seed, augment)
    ds = ds.map(_encoder(num_classes, sparse, binary), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_inputs(image_paths, labels, batch_size, repeat):
    """Raise for mismatched lists, a bad batch size or bad repeat factors; the factors as float32 (or None)."""
    if len(image_paths) != len(labels):
        raise KsegError(f"{len(image_paths)} images but {len(labels)} label maps")
    if batch_size < 1:
        raise KsegError(f"bad batch size {batch_size}: give a positive integer")
    if repeat is not None:
        repeat = np.asarray(repeat, np.float32)
        if repeat.shape != (len(labels),) or not np.all(np.isfinite(repeat) & (repeat >= 0)):
            raise KsegError(f"repeat factors: need {len(labels)} finite numbers >= 0, got shape {repeat.shape}")
    return repeat


def _loader(h: int, w: int):
    """``(path, flat labels, shape) -> (uint8 image, label (h, w, 1))`` resized to ``(h, w)``."""

    def load(path, flat, shape):
        img = decode_image(path)
        img = tf.image.resize(tf.cast(img, tf.float32), (h, w), method="bilinear", antialias=False)
        # cached and shuffled as uint8 (a quarter of float32's memory); back to float32 after the shuffle
        img = tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)
        lab = tf.reshape(flat, tf.concat([shape, [1]], 0))
        lab = tf.image.resize(lab, (h, w), method="nearest")  # never interpolate class ids
        return img, lab

    return load


def _training_stream(ds, n: int, repeat, seed: int, augment):
    """Shuffled without end (each image ``repeat`` times a pass on average), then augmented."""
    if repeat is not None and np.any(repeat != 1.0):
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(repeat)))
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()

        def copies(pair, i):  # floor(r) copies, one more with probability frac(r); seeded per draw
            (img, lab), r = pair
            u = tf.random.stateless_uniform([], tf.stack([tf.constant(seed + 1, tf.int64), i]))
            k = tf.cast(tf.floor(r), tf.int64) + tf.cast(u < r - tf.floor(r), tf.int64)
            return tf.data.Dataset.from_tensors((img, lab)).repeat(k)

        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).flat_map(copies)
        ds = ds.shuffle(n, seed=seed + 2, reshuffle_each_iteration=True)
    else:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    if augment is not None:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).map(
            lambda pair, i: augment(tf.cast(pair[0], tf.float32), pair[1],
                                    tf.stack([tf.constant(seed, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds


def _encoder(num_classes: int, sparse: bool, binary: bool):
    """``(image, label) -> (float32 image, target)``: one-hot, sparse or binary targets."""

    def encode(img, lab):
        img = tf.cast(img, tf.float32)
        lab = lab[..., 0]
        if binary:
            target = to_binary(lab)
        else:
            target = to_sparse(lab) if sparse else to_one_hot(lab, num_classes)
        return img, target

    return encode


def split_datasets(ds, size=(224, 224), batch_size: int = 16, val_split: float = 0.2, seed: int = 42,
                   sparse: bool = False, augment=None, fold: int | None = None, repeat_threshold: float = 0.0,
                   binary: bool | None = None):
    """Split a loaded dataset (``image_paths``, ``labels``, ``num_classes``) and build its pipelines.

    Returns ``(train_ds, val_ds, info)``: ``train_ds`` repeats without end (train
    with ``info["steps_per_epoch"]``), ``val_ds`` is None when the split leaves no
    validation images, and ``info`` holds ``dataset``, ``train_idx``, ``val_idx``
    and ``steps_per_epoch``. ``augment`` is a name (see :func:`kseg.data.augment.get`) or a
    callable. ``fold`` (0-4, iccv09 only) replaces the random split by the shipped 5-fold split.
    ``repeat_threshold`` > 0 turns on repeat-factor sampling of the training images (see
    :func:`repeat_factors`, counted on the training images); ``info["repeat_factors"]`` then holds the
    per-image factors, ``info["class_repeat_factors"]`` the per-class ones and ``info["class_images"]`` how many
    training images hold each class (all None when off). ``binary`` (default: the dataset's own ``binary``
    flag) gives one-channel binary targets (:func:`to_binary`) for a model with one sigmoid output.
    """
    from kseg.data import augment as aug

    size = check_size(size)
    if binary is None:
        binary = bool(getattr(ds, "binary", False))
    if fold is not None:
        train_idx, val_idx = fold_indices(ds.ids, fold)
    else:
        train_idx, val_idx = split_indices(len(ds), val_split, seed)

    def pick(idx):
        return [ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx]

    train_paths, train_labels = pick(train_idx)
    present = per_class = factors = None
    if repeat_threshold:
        present, per_class = class_repeat_factors(train_labels, ds.num_classes, repeat_threshold)
        factors = image_repeat_factors(present, per_class)
    train = make_dataset(train_paths, train_labels, ds.num_classes, size, batch_size, sparse=sparse, training=True,
                         augment=aug.get(augment) if isinstance(augment, str) else augment, seed=seed,
                         repeat=factors, binary=binary)
    val = (make_dataset(*pick(val_idx), ds.num_classes, size, batch_size, sparse=sparse, binary=binary)
           if len(val_idx) else None)
    steps = -(-len(train_idx) // batch_size)
    return train, val, {"dataset": ds, "train_idx": train_idx, "val_idx": val_idx, "steps_per_epoch": steps,
                        "repeat_factors": factors, "class_repeat_factors": per_class,
                        "class_images": None if present is None else present.sum(0)}
