"""bench/runtimes.py's summary: the peer's better setting, the best runtimes, the targets and int8's mIoU change
(the bench itself runs for half an hour: not a unit test)."""

import argparse

import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("runtimes")


def row(ips, rss=100.0):
    return {"images_per_s": ips, "best_batch": 1, "by_batch": {"1": ips}, "peak_rss_mb": rss}


def test_summary_compares_each_runtime_with_the_peers_better_setting(bench):
    rows = {"saved_model": [row(3.0, 900)], "onnx": [row(5.0, 400), row(6.0, 420)], "openvino": [row(4.0)],
            "litert": [row(2.0)], "openvino_int8": [row(10.0)], "litert_int8": [row(7.0)],
            "peer": [row(2.0, 800)], "peer_onednn": [row(2.5, 850)]}
    miou = {name: {"miou": v} for name, v in [("keras", 0.70), ("onnx", 0.70), ("openvino", 0.70),
                                              ("openvino_int8", 0.696), ("litert", 0.70), ("litert_int8", 0.69)]}
    args = argparse.Namespace(quick=True, threads=2, model="m.keras")
    s = bench.summarize(args, rows, {}, miou, 2, 16, 1.0)
    assert s["peer_setting"] == "TF_ENABLE_ONEDNN_OPTS=1"
    assert s["infer"]["onnx"]["images_per_s"] == 6.0 and s["infer"]["onnx"]["vs_peer"] == 2.4
    assert s["infer"]["onnx"]["peak_rss_mb"] == 420
    assert s["best_float32"]["runtime"] == "onnx" and s["best_int8"]["runtime"] == "openvino_int8"
    assert s["openvino_int8_miou_change_points"] == pytest.approx(-0.4)
    assert s["litert_int8_miou_change_points"] == pytest.approx(-1.0)
    assert s["targets_met"] == {"float32_2x": True, "int8_3x": True, "rss_at_most_peer": True,
                                "int8_miou_within_0.5": True}
