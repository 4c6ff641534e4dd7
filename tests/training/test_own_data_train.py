"""kseg.train on a user's own folder: binary masks end to end, run.json, and never training over a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kseg import train


def make_shapes(root: Path, n: int = 32, size: int = 64, seed: int = 0, fmt: str = "0/255") -> Path:
    """Bright discs and boxes on grey noise; masks mark them (foreground) against the noise (background).

    ``fmt``: how the masks are saved: ``0/255`` or ``0/1`` greyscale PNGs, or ``indexed`` (a "P" PNG of ids 0/1
    with a two-colour palette)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = rng.integers(40, 120, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.integers(8, size - 8, 2)
            r = int(rng.integers(4, 11))
            if rng.random() < 0.5:
                mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                mask |= (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        img[mask] = np.clip(img[mask].astype(int) + 110, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"s{i:03d}.png")
        ids = mask.astype(np.uint8)
        if fmt == "0/255":
            Image.fromarray(ids * 255).save(root / "masks" / f"s{i:03d}.png")
        elif fmt == "0/1":
            Image.fromarray(ids).save(root / "masks" / f"s{i:03d}.png")
        elif fmt == "indexed":
            im = Image.fromarray(ids, mode="P")
            im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
            im.save(root / "masks" / f"s{i:03d}.png")
        else:
            raise ValueError(fmt)
    return root


def _train(args, capsys=None):
    code = train.main([str(a) for a in args])
    return code


TINY = ["--size", "32", "--epochs", "1", "--batch-size", "3", "--model", "unet", "--backbone", "plain",
        "--no-export", "--verbose", "0"]


def test_a_finished_run_is_never_trained_over_without_overwrite(tiny_iccv09, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(["--data", tiny_iccv09, "--out", out, *TINY]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["finished"] is True and info["binary"] is False
    assert info["class_names"] == ["sky", "ground", "vertical"] or len(info["class_names"]) == 3
    assert sorted(info["train_ids"] + info["val_ids"]) == [f"{i:07d}" for i in range(6)]
    assert set(info["versions"]) == {"kseg", "tensorflow", "keras"}
    best = (out / "best.keras").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _train(["--data", tiny_iccv09, "--out", out, *TINY])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kseg: error: {out}: holds a finished run (best.keras, history.csv")
    assert "pass --overwrite to train over it" in err and len(err.splitlines()) == 1
    assert (out / "best.keras").read_bytes() == best  # untouched

    # --overwrite: the old outputs go first, so none of them can be left out of step with the new model
    (out / "saved_model").mkdir()  # as an exported earlier run would have left it
    assert _train(["--data", tiny_iccv09, "--out", out, "--overwrite", *TINY]) == 0
    printed = capsys.readouterr().out
    assert f"kseg: --overwrite: removed the finished run's outputs in {out}" in printed
    assert not (out / "saved_model").exists()
    assert json.loads((out / "run.json").read_text())["finished"] is True


def test_a_finished_run_of_an_older_kseg_without_run_json_is_protected_too(tiny_iccv09, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "best.keras").write_bytes(b"weights of 75 minutes")
    (out / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit):
        _train(["--data", tiny_iccv09, "--out", out, *TINY])
    assert "holds a finished run (best.keras, metrics.json)" in capsys.readouterr().err
    assert (out / "best.keras").read_bytes() == b"weights of 75 minutes"


@pytest.mark.parametrize("args, message", [
    (["--palette", "p.json"], "--palette: for your own data (--data-format folder)"),
    (["--binary"], "--binary: for your own data (--data-format folder)"),
    (["--data-format", "folder", "--data", "x", "--ignore-index", "-3"], "bad --ignore-index '-3'"),
    (["--data-format", "folder", "--data", "x", "--threshold", "1.5"], "bad --threshold 1.5"),
])
def test_own_data_options_are_checked(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _train([*args, "--out", tmp_path / "o"])
    assert message in capsys.readouterr().err


def test_classes_option_takes_names_or_a_file(tmp_path):
    assert train.parse_classes("bg, cat ,dog") == ["bg", "cat", "dog"]
    f = tmp_path / "names.txt"
    f.write_text("background\n\nroad\n")
    assert train.parse_classes(str(f)) == ["background", "road"]
    with pytest.raises(train.KsegError, match="appears twice"):
        train.parse_classes("a,a")


@pytest.mark.parametrize("fmt", ["0/255"])
def test_binary_masks_train_foreground_against_background_end_to_end(fmt, tmp_path, capsys):
    """0/255 masks (the commonest binary format): detected as binary, said in one line, trained as one sigmoid
    output, scored on the foreground; a short run on shapes-on-noise reaches foreground IoU >= 0.8."""
    import keras

    data = make_shapes(tmp_path / "shapes", n=40, fmt=fmt)
    out = tmp_path / "run"
    assert _train(["--data-format", "folder", "--data", data, "--out", out, "--size", "64", "--epochs", "8", "--bn-momentum", "0.9",
                   "--batch-size", "8", "--model", "unet", "--backbone", "resnet18", "--lr", "3e-3", "--loss",
                   "dice+bce", "--no-export", "--verbose", "0", "--monitor", "val_iou_foreground"]) == 0
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "binary segmentation (255 = foreground, 0 = background)" in said
    assert "(folder: binary, foreground against background)" in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == ["background", "foreground"]
    assert metrics["iou"]["foreground"] >= 0.8, metrics["iou"]
    assert "foreground IoU" in said
    info = json.loads((out / "run.json").read_text())
    assert info["binary"] is True and info["threshold"] == 0.5 and info["finished"] is True
    model = keras.saving.load_model(out / "best.keras", compile=False)
    assert model.outputs[0].shape[-1] == 1
