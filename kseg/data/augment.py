"""Joint image/mask augmentation with stateless, seeded randomness.

Each augmentation is a callable ``(image, label, seed) -> (image, label)``:
``image`` float32 (H, W, 3) in [0, 255], ``label`` int (H, W, 1) with -1 for
unknown, ``seed`` a shape-[2] int tensor. Geometric changes apply to both;
label maps are only ever moved, never interpolated.
"""

from __future__ import annotations

import tensorflow as tf

from kseg.errors import KsegError


def hflip(image, label, seed):
    """Flip image and mask left-right together with probability 0.5."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


AUGMENTATIONS = {"none": None, "flip": hflip}


def get(name: str | None):
    """Look an augmentation up by name ("none", "flip")."""
    if name is None:
        return None
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise KsegError(f"unknown augmentation {name!r}: choose one of {', '.join(AUGMENTATIONS)}") from None
