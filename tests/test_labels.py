"""kseg.labels: one-hot / sparse / binary targets and the ignore rule."""

from __future__ import annotations

import numpy as np

from kseg import labels


def test_conversions_of_a_label_map_with_unknown_pixels():
    lab = np.array([[0, 1, 2], [-1, 255, 1]], np.int32)
    sparse = np.asarray(labels.to_sparse(lab))
    assert sparse.tolist() == [[0, 1, 2], [255, 255, 1]]
    onehot = np.asarray(labels.to_one_hot(lab, 3))
    assert onehot.shape == (2, 3, 3) and onehot.dtype == np.float32
    assert onehot[1, 0].tolist() == [0, 0, 0] and onehot[1, 1].tolist() == [0, 0, 0]
    assert onehot[0].argmax(-1).tolist() == [0, 1, 2]
    binary = np.asarray(labels.to_binary(lab))
    assert binary.shape == (2, 3, 1)
    assert binary[..., 0].tolist() == [[0, 1, 255], [255, 255, 1]]


def test_valid_masks_follow_the_ignore_rule():
    onehot = np.array([[1, 0], [0, 0], [0.2, 0.8]], np.float32)
    assert np.asarray(labels.one_hot_valid(onehot)).tolist() == [True, False, True]
    t = np.array([0.0, 1.0, 0.5, 255.0, -1.0], np.float32)
    assert np.asarray(labels.binary_valid(t)).tolist() == [True, True, True, False, False]
    assert np.asarray(labels.binary_hard_valid(t)).tolist() == [True, True, False, False, False]


def test_the_pipeline_reexports_the_same_functions():
    from kseg.data import pipeline

    assert pipeline.to_one_hot is labels.to_one_hot and pipeline.IGNORE_INDEX == labels.IGNORE_INDEX == 255
    assert labels.UNKNOWN == -1
