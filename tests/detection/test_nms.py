"""kseg.detection.nms against torchvision 0.29's nms and batched_nms (pinned: clustered boxes, tied scores,
duplicates, an empty box), padding and validity by hand, graph mode, and the TensorFlow-kernel variant."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kseg.detection.nms import batched_nms, nms, nms_tf

REF = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "torchvision" / "nms.npz")


def _graph(fn, *args, **kwargs):
    """Run ``fn`` in a tf.function (an eager ``while_loop`` is a slow Python loop)."""
    return tf.function(lambda: fn(*args, **kwargs))()


def _kept(result):
    keep, valid = (np.asarray(r) for r in result)
    assert (keep[~valid] == 0).all() and (np.diff(valid.astype(int)) <= 0).all()  # valid first, then 0 padding
    return keep[valid]


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_equals_torchvision_with_ties(thr):
    expected = REF[f"keep_{thr}"]
    got = _kept(_graph(nms, REF["boxes"], REF["scores"], thr, 300))
    np.testing.assert_array_equal(got, expected)
    assert 10 < len(expected) < 300


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_batched_nms_equals_torchvision(thr):
    got = _kept(_graph(batched_nms, REF["boxes"], REF["scores"], REF["idxs"], thr, 300))
    np.testing.assert_array_equal(got, REF[f"batched_{thr}"])
    assert len(REF[f"batched_{thr}"]) > len(REF[f"keep_{thr}"])


def test_max_output_cuts_and_pads():
    expected = REF["keep_0.5"]
    keep, valid = (np.asarray(r) for r in _graph(nms, REF["boxes"], REF["scores"], 0.5, 5))
    np.testing.assert_array_equal(keep, expected[:5])
    assert valid.all()
    keep, valid = (np.asarray(r) for r in _graph(nms, REF["boxes"], REF["scores"], 0.5, len(expected) + 4))
    assert valid.tolist() == [True] * len(expected) + [False] * 4 and keep[-4:].tolist() == [0] * 4


def test_invalid_boxes_are_never_kept_and_never_suppress():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 9, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert _kept(_graph(nms, boxes, scores, 0.5, 3)).tolist() == [0]
    assert _kept(_graph(nms, boxes, scores, 0.5, 3, valid=np.array([False, True, True]))).tolist() == [1]
    keep, valid = _graph(nms, boxes, scores, 0.5, 3, valid=np.zeros(3, bool))
    assert not np.asarray(valid).any()


def test_ties_keep_the_lower_index_first_and_iou_equal_to_the_threshold_survives():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.5, 0.5, 0.5, 0.4], np.float32)
    # 2 duplicates 0 (same score, higher index): suppressed; 3 has IoU 0.5 with 0: not > 0.5, kept
    assert _kept(_graph(nms, boxes, scores, 0.5, 4)).tolist() == [0, 1, 3]
    assert _kept(_graph(nms_tf, boxes, scores, 0.5, 4)).tolist() == [0, 1, 3]


@pytest.mark.parametrize("jit", [False, True])
def test_nms_runs_in_a_tf_function_and_under_xla(jit):
    fn = tf.function(lambda b, s: nms(b, s, 0.5, 64), jit_compile=jit)
    keep, valid = fn(tf.constant(REF["boxes"]), tf.constant(REF["scores"]))
    np.testing.assert_array_equal(keep.numpy()[valid.numpy()], REF["keep_0.5"][:64])


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_the_tensorflow_kernel_agrees_on_these_boxes(thr):
    got = _kept(_graph(nms_tf, REF["boxes"], REF["scores"], thr, 300))
    np.testing.assert_array_equal(got, REF[f"keep_{thr}"])


def test_the_tensorflow_kernel_differs_on_a_flipped_box():
    boxes = np.array([[0, 0, 10, 10], [10, 10, 0, 0]], np.float32)  # the second has x2 < x1, y2 < y1
    scores = np.array([0.9, 0.8], np.float32)
    assert _kept(_graph(nms, boxes, scores, 0.5, 2)).tolist() == [0, 1]  # torchvision: negative area, no overlap
    assert _kept(_graph(nms_tf, boxes, scores, 0.5, 2)).tolist() == [0]


def test_timing_on_4000_boxes_printed(capsys):
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 800, (4000, 2))
    wh = rng.uniform(10, 120, (4000, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
    scores = rng.uniform(size=4000).astype(np.float32)
    pure = tf.function(lambda b, s: nms(b, s, 0.7, 1000))
    pure_xla = tf.function(lambda b, s: nms(b, s, 0.7, 1000), jit_compile=True)
    kernel = tf.function(lambda b, s: nms_tf(b, s, 0.7, 1000))
    results = {}
    for name, fn in (("keras.ops graph", pure), ("keras.ops XLA", pure_xla), ("tf kernel", kernel)):
        out = fn(boxes, scores)  # trace
        start = time.perf_counter()
        for _ in range(3):
            out = fn(boxes, scores)
        results[name] = ((time.perf_counter() - start) / 3, _kept(out))
    np.testing.assert_array_equal(results["keras.ops graph"][1], results["tf kernel"][1])
    np.testing.assert_array_equal(results["keras.ops XLA"][1], results["tf kernel"][1])
    with capsys.disabled():
        print(f"\nnms on 4000 boxes, max_output 1000, IoU 0.7 ({len(results['tf kernel'][1])} kept): "
              + ", ".join(f"{k} {v[0]:.4f} s" for k, v in results.items()))


def test_nms_maps_over_a_batch_in_a_graph():
    from keras import ops

    boxes = np.stack([REF["boxes"], REF["boxes"][::-1]])
    scores = np.stack([REF["scores"], REF["scores"][::-1]])
    fn = tf.function(lambda b, s: ops.map(lambda t: nms(t[0], t[1], 0.5, 32), (b, s)))
    keep, valid = (np.asarray(r) for r in fn(boxes, scores))
    assert keep.shape == (2, 32) and valid.all()
    np.testing.assert_array_equal(keep[0], REF["keep_0.5"][:32])
    # reversed input order: the same boxes, except where equal scores now order the other way
    assert len(set((299 - keep[1]).tolist()) & set(REF["keep_0.5"].tolist())) > 20
