"""bench/multiscale_compare.py: it reuses finished runs and evaluations, and reports each fold and the mean."""

from __future__ import annotations

import json

import pytest

from conftest import load_bench


def _finished(root, variant, fold, scores):
    run = root / f"{variant}-fold{fold}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"seconds": 100.0 + fold}))
    for i, miou in enumerate(scores):
        (run / f"eval{i}").mkdir()
        report = {"miou": miou, "pixel_accuracy": 0.8, "mean_accuracy": 0.7}
        if variant == "hierarchical" and i == 0:
            report["per_scale"] = {"0.5": {"miou": 0.5}, "1": {"miou": 0.6}}
        (run / f"eval{i}" / "report.json").write_text(json.dumps(report))


def test_finished_runs_are_reported_per_fold_and_averaged_without_training(tmp_path, monkeypatch, capsys):
    bench = load_bench("multiscale_compare")
    monkeypatch.setattr(bench, "_run", lambda *a, **k: pytest.fail("nothing should run"))
    monkeypatch.setattr(bench, "_accuracy_bench", lambda: type("B", (), {"_keras_home": staticmethod(lambda e: e),
                                                                            "_machine": staticmethod(lambda: {})}))
    for fold, base in ((0, 0.6), (1, 0.7)):
        _finished(tmp_path, "single", fold, [base, base + 0.01, base + 0.02])
        _finished(tmp_path, "hierarchical", fold, [base + 0.03, base + 0.04])
    bench.main(["--folds", "0,1", "--variants", "single,hierarchical", "--out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 10 and out["epochs"] == 4
    means = {m["scored"]: m for m in out["mean_over_folds"]}
    assert means["one scale (1)"]["miou"] == 0.65 and means["one scale (1)"]["folds"] == [0, 1]
    assert means["hierarchical 0.5,1,2"]["miou"] == pytest.approx(0.69)
    hier = next(r for r in out["rows"] if r["scored"] == "hierarchical 0.5,1 (trained)" and r["fold"] == 1)
    assert hier["per_scale"]["1"]["miou"] == 0.6 and hier["train_seconds"] == 101.0


def test_an_unknown_variant_is_refused(capsys):
    bench = load_bench("multiscale_compare")
    with pytest.raises(SystemExit):
        bench.main(["--variants", "single,pyramid"])
    assert "unknown variant 'pyramid'" in capsys.readouterr().err
