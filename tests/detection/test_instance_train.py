"""kseg train --arch panoptic_fpn end to end on a tiny shapes dataset: the run folder, resume, refusal, and the
trained model in kseg predict (panoptic PNG, JSON and overlay). Panoptic FPN trains through every part of
Mask R-CNN's training (``--arch maskrcnn`` differs only in the model it builds; tests/detection/test_maskrcnn_training.py
trains MaskRCNN itself, and test_instance_commands.py predicts, evaluates and exports one)."""

import json

import pytest

from kseg import cli
from kseg.data.shapes import generate_shapes
from kseg.errors import KsegError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "data"
    generate_shapes(out, images=4, val=2, size=64, seed=3)
    return out


def _train(shapes, out, arch, *extra):
    return cli.main(["train", "--arch", arch, "--coco", str(shapes / "train" / "instances.json"), "--val-coco",
                     str(shapes / "val" / "instances.json"), "--size", "64", "--epochs", "1", "--batch", "2",
                     "--weights", "none", "--light", "--out", str(out), *extra])


def test_train_writes_a_run_that_predict_reads(shapes, tmp_path, capsys):
    arch = "panoptic_fpn"
    run = tmp_path / "run"
    assert _train(shapes, run, arch) == 0
    assert "kseg: trained 1 epochs, best validation score" in capsys.readouterr().out
    assert {p.name for p in run.iterdir()} >= {"best.keras", "last.keras", "metrics.json", "run.json", "history.csv"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and len(metrics["evals"]) == 1
    assert 0.0 <= metrics["evals"][0]["mask_ap"] <= 1.0
    assert set(metrics["evals"][0]["panoptic"]) >= {"All", "Things", "Stuff"}
    info = json.loads((run / "run.json").read_text())
    assert info["class_names"][0] == "background" and info["min_size"] == info["max_size"] == 64
    # kseg predict with the trained model
    out = tmp_path / "pred"
    image = sorted((shapes / "val" / "images").iterdir())[0]
    assert cli.main(["predict", "--model", str(run / "best.keras"), str(image), "--out", str(out)]) == 0
    suffixes = ("_panoptic.png", "_panoptic.json", "_panoptic_overlay.png")
    assert sorted(p.name for p in out.iterdir()) == sorted(image.stem + s for s in suffixes)
    # kseg evaluate: COCO AP and, for a Panoptic FPN, PQ on the panoptic JSON beside --coco
    assert cli.main(["evaluate", "--model", str(run / "best.keras"), "--coco", str(shapes / "val" / "instances.json"),
                     "--out", str(tmp_path / "eval")]) == 0
    assert "kseg: PQ " in capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert {"All", "Things", "Stuff"} <= set(report["panoptic"]) and report["panoptic"]["images"] == 2
    # kseg export says in one line that it does not write a Panoptic FPN
    with pytest.raises(SystemExit) as err:
        cli.main(["export", "--model", str(run / "best.keras"), "--out", str(tmp_path / "exported")])
    assert err.value.code == 2
    assert "kseg export does not write Panoptic FPN models yet" in capsys.readouterr().err
    assert not (tmp_path / "exported").exists()
    # a finished run is not trained over; --resume continues it for one more epoch
    with pytest.raises(SystemExit) as err:
        _train(shapes, run, arch)
    assert err.value.code == 2
    assert "the run folder exists and is not empty; give --resume" in capsys.readouterr().err
    resumed = ["train", "--arch", arch, "--coco", str(shapes / "train" / "instances.json"), "--size", "64",
               "--epochs", "2", "--batch", "2", "--weights", "none", "--light", "--out", str(run), "--resume"]
    assert cli.main(resumed) == 0  # (no --val-coco: the epoch is trained and saved, not scored)
    assert json.loads((run / "metrics.json").read_text())["epochs_done"] == 2


def test_bad_options_are_one_line():
    from kseg.detection.train_command import config

    with pytest.raises(KsegError, match=r"bad --size 50: give a positive multiple of 32"):
        config(["--arch", "maskrcnn", "--coco", "x.json", "--size", "50"])
    with pytest.raises(KsegError, match=r"bad --epochs 0"):
        config(["--arch", "maskrcnn", "--coco", "x.json", "--epochs", "0"])
