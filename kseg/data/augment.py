"""Joint image/mask augmentation with stateless, seeded randomness.

Each augmentation is a callable ``(image, label, seed) -> (image, label)``:
``image`` float32 (H, W, 3) in [0, 255], ``label`` int (H, W, 1) with -1 for
unknown, ``seed`` a shape-[2] int tensor. Geometric changes apply to both;
label maps are only ever moved or resized by nearest neighbour, never
interpolated, and pixels brought in from outside the image are unknown (-1).

By name (``get``, ``python -m kseg.train --augment``), alone or joined by commas:

- ``flip``: left-right mirror with probability 0.5;
- ``scale``: random scale in [0.5, 2.0] (DeepLab's range), then a random crop
  back to the input size; a scaled-down image is padded with the ImageNet mean
  colour and unknown labels;
- ``color``: brightness (±0.2), contrast and saturation (x0.8-1.2) and hue (±0.05) jitter;
- ``strong``: ``scale,flip,color``.
"""

from __future__ import annotations

import tensorflow as tf

from kseg.errors import KsegError

SCALE_RANGE = (0.5, 2.0)
_PAD_RGB = (124.0, 116.0, 104.0)  # the ImageNet mean colour, in [0, 255]


def hflip(image, label, seed):
    """Flip image and mask left-right together with probability 0.5."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


def scale_crop(image, label, seed, scale_range=SCALE_RANGE):
    """Rescale image and mask by one random factor in ``scale_range``, then crop (or pad) to the input size."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    s = tf.random.stateless_uniform([], seed=seed, minval=scale_range[0], maxval=scale_range[1])
    nh = tf.maximum(1, tf.cast(tf.round(tf.cast(h, tf.float32) * s), tf.int32))
    nw = tf.maximum(1, tf.cast(tf.round(tf.cast(w, tf.float32) * s), tf.int32))
    image = tf.image.resize(image, tf.stack([nh, nw]), method="bilinear", antialias=False)
    lab = tf.image.resize(tf.cast(label, tf.int32), tf.stack([nh, nw]), method="nearest")
    ph, pw = tf.maximum(h - nh, 0), tf.maximum(w - nw, 0)
    pad = [[ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]]
    image = tf.concat([tf.pad(image[..., c:c + 1], pad, constant_values=_PAD_RGB[c]) for c in range(3)], -1) \
        if image.shape[-1] == 3 else tf.pad(image, pad)
    lab = tf.pad(lab, pad, constant_values=-1)
    both = tf.concat([image, tf.cast(lab, tf.float32)], -1)
    crop_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    both = tf.image.stateless_random_crop(both, tf.stack([h, w, tf.shape(both)[-1]]), seed=crop_seed)
    image = both[..., :-1]
    label = tf.cast(tf.round(both[..., -1:]), label.dtype)
    return image, label


def color_jitter(image, label, seed, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05):
    """Random brightness, contrast, saturation and hue (the mask is unchanged)."""
    seeds = [tf.random.experimental.stateless_fold_in(seed, k) for k in range(4)]
    x = image / 255.0
    x = tf.image.stateless_random_brightness(x, brightness, seeds[0])
    x = tf.image.stateless_random_contrast(x, 1 - contrast, 1 + contrast, seeds[1])
    if image.shape[-1] == 3:
        x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), 1 - saturation, 1 + saturation,
                                                 seeds[2])
        x = tf.image.stateless_random_hue(x, hue, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0, label


def compose(*augmentations):
    """Apply ``augmentations`` in order, each with its own seed derived from the sample's."""
    augmentations = [a for a in augmentations if a is not None]

    def apply(image, label, seed):
        for k, aug in enumerate(augmentations):
            image, label = aug(image, label, tf.random.experimental.stateless_fold_in(seed, 1000 + k))
        return image, label

    return apply


AUGMENTATIONS = {"none": None, "flip": hflip, "scale": scale_crop, "color": color_jitter}
PRESETS = {"strong": ("scale", "flip", "color")}


def get(name: str | None):
    """An augmentation by name: "none", "flip", "scale", "color", "strong", or names joined by commas."""
    if name is None:
        return None
    parts = [p.strip() for p in str(name).split(",") if p.strip()]
    names = []
    for p in parts:
        names.extend(PRESETS.get(p, (p,)))
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise KsegError(f"unknown augmentation {bad[0]!r}: choose from {', '.join([*AUGMENTATIONS, *PRESETS])} "
                        f"(several joined by commas, e.g. scale,flip,color)")
    fns = [AUGMENTATIONS[n] for n in names if AUGMENTATIONS[n] is not None]
    if not fns:
        return None
    return fns[0] if len(fns) == 1 else compose(*fns)
