"""bench/time_to_accuracy.py's parts: the epoch clock and its stopping rule, the peer's native-resolution scoring
and the speed-up it reports (the bench itself trains for an hour: not a unit test)."""

import numpy as np
import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("time_to_accuracy")


class FakeModel:
    stop_training = False


def run_epochs(bench, accuracies, target, budget=None, epoch_seconds=0.02):
    import time

    import keras

    clock, rows = bench.Clock(), []

    def score(model):
        time.sleep(0.05)  # evaluation: not on the training clock
        return accuracies[len(rows)], 0.5

    cb = bench.epoch_callback(keras, score, target, clock, rows, budget)
    cb.set_model(FakeModel())
    for epoch in range(len(accuracies)):
        cb.on_epoch_begin(epoch)
        time.sleep(epoch_seconds)
        cb.on_epoch_end(epoch, {"loss": 1.0})
        if cb.model.stop_training:
            break
    return clock, rows


def test_the_clock_counts_epochs_not_evaluations_and_stops_at_the_target(bench):
    clock, rows = run_epochs(bench, [0.5, 0.85, 0.91, 0.95], 0.90)
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # stopped once 0.91 >= 0.90
    assert 0.06 <= clock.wall < 0.15  # three epochs of 0.02 s; the 0.05 s evaluations left out
    assert all(r["eval_seconds"] >= 0.05 for r in rows)
    result = bench._result(rows, 0.90, clock, 1.0, {})
    assert result["reached"] and result["epochs"] == 3 and result["seconds"] == rows[2]["train_seconds"]
    assert result["best_pixel_accuracy"] == 0.91


def test_the_budget_stops_a_run_that_has_not_reached_the_target(bench):
    clock, rows = run_epochs(bench, [0.5, 0.6, 0.7, 0.8], 0.90, budget=0.03)
    assert [r["epoch"] for r in rows] == [1, 2]  # the clock passed 0.03 s after the second epoch
    result = bench._result(rows, 0.90, clock, 1.0, {})
    assert not result["reached"] and result["seconds"] is None and result["trained_seconds"] == rows[-1]["train_seconds"]


def test_compare(bench):
    kseg = {"reached": True, "seconds": 100.0, "cpu_seconds": 190.0}
    peer = {"reached": True, "seconds": 900.0, "cpu_seconds": 1700.0, "trained_seconds": 900.0}
    assert bench.compare(kseg, peer) == {"speedup": 9.0, "speedup_cpu": 8.95, "target_met": True}
    peer = {"reached": False, "trained_seconds": 700.0, "trained_cpu_seconds": 1400.0}
    assert bench.compare(kseg, peer) == {"speedup_at_least": 7.0, "speedup_cpu_at_least": 7.37, "target_met": False}
    assert bench.compare({"reached": False}, peer) == {"target_met": False}


def test_peer_scoring_is_native_resolution_with_unknown_pixels_ignored(bench):
    class Model:  # predicts class 1 on the left half, class 0 on the right, at 224x224
        def predict(self, x, batch_size, verbose):
            p = np.zeros((len(x), 224, 224, 3), np.float32)
            p[:, :, :112, 1] = 1
            p[:, :, 112:, 0] = 1
            return p

    label = np.full((4, 6), 1)
    label[:, 3:] = 2  # right half truly class 2: wrong
    label[0, :] = -1  # unknown: ignored
    image = np.zeros((4, 6, 3), np.uint8)
    acc, miou = bench.peer_scorer([(image, label)], lambda x: x, 3)(Model())
    assert acc == pytest.approx(0.5)  # 9 of 18 known pixels
    assert miou == pytest.approx((0 + 1 + 0) / 3)  # IoU 0, 1, 0: classes in the truth or the prediction
