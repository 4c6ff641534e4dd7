"""kseg.detection.matching: Matcher against torchvision 0.29 (pinned, with many tied qualities), padded and
crowd ground truth by hand, and the balanced sampler's counts and randomness."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from kseg.detection.matching import Matcher, sample_balanced

REF = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "torchvision" / "matching.npz")
SETTINGS = [(0.7, 0.3, True), (0.5, 0.5, False), (0.5, 0.4, True)]


@pytest.mark.parametrize("name", ["iou", "ties"])
@pytest.mark.parametrize("high,low,lowq", SETTINGS)
def test_matcher_equals_torchvision(name, high, low, lowq):
    q = REF["quality"] if name == "iou" else REF["quality_ties"]
    got = np.asarray(Matcher(high, low, lowq)(q))
    expected = REF[f"{name}_{high}_{low}_{int(lowq)}"]
    np.testing.assert_array_equal(got, expected)
    assert (expected >= 0).any() and (expected == -1).any()


def test_padded_ground_truth_never_matches():
    q = REF["quality"]
    padded = np.concatenate([q, np.ones((3, q.shape[1]), np.float32)], 0)  # padded rows with IoU 1 everywhere
    valid = np.array([True] * len(q) + [False] * 3)
    got = np.asarray(Matcher(0.7, 0.3, True)(padded, valid))
    np.testing.assert_array_equal(got, REF["iou_0.7_0.3_1"])


def test_no_valid_ground_truth_is_all_background():
    q = np.full((2, 5), 0.9, np.float32)
    got = np.asarray(Matcher(0.7, 0.3, True)(q, np.array([False, False])))
    assert got.tolist() == [-1] * 5
    assert np.asarray(Matcher(0.7, 0.3)(np.zeros((0, 4), np.float32))).tolist() == [-1] * 4


def test_low_quality_matches_by_hand():
    q = np.array([[0.1, 0.6, 0.6, 0.8], [0.2, 0.1, 0.0, 0.05]], np.float32)
    assert np.asarray(Matcher(0.7, 0.3, False)(q)).tolist() == [-1, -2, -2, 0]
    # gt 1's best (0.2) goes to prediction 0; gt 0's best is 0.8 (already matched)
    assert np.asarray(Matcher(0.7, 0.3, True)(q)).tolist() == [1, -2, -2, 0]


def test_crowd_regions_are_ignored_not_negative():
    q = np.array([[0.8, 0.1, 0.0, 0.35, 0.0],    # a person
                  [0.1, 0.2, 0.9, 0.4, 0.25]],  # a crowd region
                 np.float32)
    got = np.asarray(Matcher(0.7, 0.3, True)(q, gt_crowd=np.array([False, True])))
    # 2 and 3 overlap the crowd most (>= low): ignored; 4 overlaps it under low: background; the crowd
    # region is never a target; the person keeps its best prediction
    assert got.tolist() == [0, -1, -2, -2, -1]
    without = np.asarray(Matcher(0.7, 0.3, True)(q[:1]))
    assert without.tolist() == [0, -1, -1, -2, -1]


def test_low_threshold_above_high_is_refused():
    with pytest.raises(ValueError, match="low_threshold 0.8 should be <= high_threshold 0.5"):
        Matcher(0.5, 0.8)


def test_sample_balanced_counts_and_fractions():
    labels = np.array([1] * 30 + [0] * 100 + [-1] * 20)
    seed = keras.random.SeedGenerator(0)
    pos, neg = (np.asarray(m) for m in sample_balanced(labels, 64, 0.25, seed))
    assert pos.sum() == 16 and neg.sum() == 48
    assert labels[pos].min() == 1 and (labels[neg] == 0).all() and not (pos & neg).any()
    pos2, _ = (np.asarray(m) for m in sample_balanced(labels, 64, 0.25, seed))
    assert (pos2 != pos).any()  # the generator moves on: another subset


def test_sample_balanced_fills_with_negatives_when_positives_are_few():
    labels = np.array([1] * 3 + [0] * 10 + [-1] * 5)
    pos, neg = (np.asarray(m) for m in sample_balanced(labels, 8, 0.5, keras.random.SeedGenerator(1)))
    assert pos.sum() == 3 and neg.sum() == 5
    pos, neg = (np.asarray(m) for m in sample_balanced(labels, 256, 0.5, keras.random.SeedGenerator(1)))
    assert pos.sum() == 3 and neg.sum() == 10


def test_sample_balanced_is_uniform_over_positives():
    labels = np.array([1] * 10 + [0] * 10)
    seed = keras.random.SeedGenerator(3)
    counts = np.zeros(10)
    for _ in range(300):
        counts += np.asarray(sample_balanced(labels, 4, 0.5, seed)[0])[:10]
    # each positive is drawn with probability 2/10: 60 expected in 300 draws
    assert counts.sum() == 600 and counts.min() > 35 and counts.max() < 90


def test_matcher_and_sampler_run_in_a_graph():
    import tensorflow as tf

    seed = keras.random.SeedGenerator(5)

    @tf.function
    def step(q, valid):
        labels = tf.cast(Matcher(0.7, 0.3, True)(q, valid) >= 0, tf.int32)
        return sample_balanced(labels, 16, 0.25, seed)

    pos, neg = (np.asarray(m) for m in step(REF["quality"], np.ones(6, bool)))
    assert 1 <= pos.sum() <= 4 and pos.sum() + neg.sum() == 16
