"""Label forms and the ignore rule, in one place.

kseg's label maps hold class ids with :data:`UNKNOWN` (-1) for unknown pixels.
Targets for a model take one of three forms:

- one-hot (..., C) float32: an ignored pixel is an all-zero row (:func:`to_one_hot`);
- sparse (...) int32: an ignored pixel is :data:`IGNORE_INDEX` (:func:`to_sparse`);
- binary (..., 1) float32: 0 = background, 1 = foreground, :data:`IGNORE_INDEX`
  for every other id (:func:`to_binary`).

The ignore rule on targets, as losses and metrics apply it (Keras ops):
a one-hot row is valid when it holds a positive entry (:func:`one_hot_valid`);
a 1-channel binary target is valid when it lies in [0, 1]
(:func:`binary_valid`; losses accept soft values in between), and counts for a
metric only when it is exactly 0 or 1 (:func:`binary_hard_valid`).

The conversions import TensorFlow when called, so the constants load without it.
"""

from __future__ import annotations

IGNORE_INDEX = 255
UNKNOWN = -1


def to_sparse(labels):
    """Map unknown (negative) ids to IGNORE_INDEX, as sparse targets use."""
    import tensorflow as tf

    labels = tf.cast(labels, tf.int32)
    return tf.where(labels < 0, tf.constant(IGNORE_INDEX, tf.int32), labels)


def to_one_hot(labels, num_classes: int):
    """One-hot float32 targets; negative ids and IGNORE_INDEX become all-zero rows."""
    import tensorflow as tf

    labels = tf.cast(labels, tf.int32)
    labels = tf.where(labels >= num_classes, -1, labels)
    return tf.one_hot(labels, num_classes, dtype=tf.float32)


def to_binary(labels):
    """Binary targets (..., 1) float32: 1 = foreground, 0 = background, IGNORE_INDEX for every other id
    (unknown pixels, -1)."""
    import tensorflow as tf

    labels = tf.cast(labels, tf.int32)
    known = (labels == 0) | (labels == 1)
    return tf.cast(tf.where(known, labels, IGNORE_INDEX), tf.float32)[..., None]


def one_hot_valid(y_true, keepdims: bool = False):
    """Boolean mask of the valid pixels of one-hot targets (a row with a positive entry)."""
    from keras import ops

    return ops.max(y_true, axis=-1, keepdims=keepdims) > 0


def binary_valid(y_true):
    """Boolean mask of the valid values of 1-channel binary targets: those in [0, 1] (soft values too)."""
    return (y_true >= 0.0) & (y_true <= 1.0)


def binary_hard_valid(y_true):
    """Boolean mask of 1-channel binary targets that are exactly 0 or 1 (what a metric counts)."""
    return (y_true == 0.0) | (y_true == 1.0)
