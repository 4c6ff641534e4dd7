"""Issue 7, reliability: bad input gets one clear line and exit status 2; an interrupted run loses nothing.

Cases already tested elsewhere (not repeated here): a missing --data path, --mask, --size 100,
--epochs 0, --batch-size -1, --val-split 1.5 and label values outside the classes on the command
line (test_train.py); missing/empty data folder, absolute/traversal/symlink archive members, a
non-gzip archive, label parse errors and a label/image size mismatch in the library, a cache of
another CACHE_VERSION or a damaged cache (test_data.py).
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import REPO, write_label
from kseg import train
from kseg.data import iccv09 as ic
from kseg.data import load_iccv09, parse_label_text
from kseg.errors import KsegError, cli_entry, write_text_atomic


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("kseg: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def _fails(main, args, capsys) -> str:
    """Run a CLI ``main`` in-process; assert exit status 2 and one ``kseg: error:`` line; return it."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 2
    return _one_error_line(capsys)


def _tar_gz(path: Path, members) -> Path:
    """A .tar.gz of ``(TarInfo, bytes or None)`` members."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _archive_of(folder: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="iccv09Data")
    return path


def _tiny_model(num_classes=3, size=32):
    import keras

    inp = keras.Input((size, size, 3))
    out = keras.layers.Conv2D(num_classes, 1, activation="softmax")(keras.layers.Rescaling(1 / 255)(inp))
    return keras.Model(inp, out)


def _truncate_jpeg(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header is intact, the scan data stops half-way


# --------------------------------------------------------------------------- data errors on the command line


def _write(path: Path, data: bytes, then):
    path.write_bytes(data)
    return then


def _link(kind):
    info = tarfile.TarInfo("iccv09Data/images/x.jpg")
    info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
    info.linkname = "/etc/passwd" if kind == "symlink" else "iccv09Data/labels/a.surfaces.txt"
    return [(tarfile.TarInfo("iccv09Data/labels/a.surfaces.txt"), b"0\n"), (info, None)]


DATA_CASES = {
    # name: (what to do to the tiny dataset -> the --data argument, expected pieces of the message)
    "empty folder": (lambda d, t: (t / "empty").mkdir() or t / "empty", ["empty", "the data folder is empty"]),
    "not a dataset folder": (lambda d, t: (t / "x").mkdir() or _write(t / "x" / "a.txt", b"", t / "x"),
                             ["/x: no images/ or labels/ folder"]),
    "image without label": (lambda d, t: (d / "labels" / "0000003.surfaces.txt").unlink() or d,
                            ["0000003.surfaces.txt: missing label file for image 0000003.jpg"]),
    "label without image": (lambda d, t: (d / "images" / "0000001.jpg").unlink() or d,
                            ["0000001.jpg: missing image for label file 0000001."]),
    "ragged label rows": (lambda d, t: _write(d / "labels" / "0000002.surfaces.txt", b"0 1 2\n0 1\n", d),
                          ["0000002.surfaces.txt: ragged rows: line 2 has 2 values, line 1 has 3"]),
    "non-integer label": (lambda d, t: _write(d / "labels" / "0000002.surfaces.txt", b"0 1\n0 x\n", d),
                          ["0000002.surfaces.txt: line 2: non-integer token"]),
    "empty label": (lambda d, t: _write(d / "labels" / "0000004.surfaces.txt", b"", d),
                    ["0000004.surfaces.txt: empty label file"]),
    "label size": (lambda d, t: write_label(d / "labels" / "0000002.surfaces.txt", np.zeros((10, 12), int)) or d,
                   ["0000002.surfaces.txt: label is 12x10 (WxH) but its image 0000002.jpg is 48x40"]),
    "no image decodes": (lambda d, t: [_truncate_jpeg(p) for p in (d / "images").iterdir()] and d,
                         ["images: none of the 6 images could be read"]),
    "archive not gzip/tar": (lambda d, t: _write(t / "iccv09Data.tar.gz", b"PK\x03\x04 a zip?", t / "iccv09Data.tar.gz"),
                             ["iccv09Data.tar.gz: not a readable .tar.gz archive"]),
    "archive truncated": (lambda d, t: _cut(_archive_of(d, t / "iccv09Data.tar.gz"), 0.5),
                          ["iccv09Data.tar.gz: not a readable .tar.gz archive", "ended before"]),
    "archive cut in its trailer": (lambda d, t: _cut(_archive_of(d, t / "iccv09Data.tar.gz"), -3),
                                   ["iccv09Data.tar.gz: not a readable .tar.gz archive"]),
    "archive member outside": (lambda d, t: _tar_gz(t / "iccv09Data.tar.gz",
                                                    [(tarfile.TarInfo("iccv09Data/../../../evil.txt"), b"x")]),
                               ["evil.txt' would land outside the target folder; refusing to extract"]),
    "archive symlink": (lambda d, t: _tar_gz(t / "iccv09Data.tar.gz", _link("symlink")),
                        ["member 'iccv09Data/images/x.jpg' is a link; refusing to extract"]),
    "archive hardlink": (lambda d, t: _tar_gz(t / "iccv09Data.tar.gz", _link("hardlink")),
                         ["member 'iccv09Data/images/x.jpg' is a link; refusing to extract"]),
}


def _cut(path: Path, where) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * where)] if isinstance(where, float) else data[:where])
    return path


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_is_one_line_naming_the_file_and_exit_2(case, tiny_iccv09, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # archives are extracted into ./data
    make, expected = DATA_CASES[case]
    data = make(tiny_iccv09, tmp_path)
    line = _fails(train.main, ["--data", data, "--size", "32", "--out", tmp_path / "out"], capsys)
    for piece in expected:
        assert piece in line, line
    assert not (tmp_path / "evil.txt").exists() and not Path("/evil.txt").exists()
    assert not (tmp_path / "data" / "iccv09Data").exists()  # a refused archive leaves nothing to trust


@pytest.mark.parametrize("args, message", [
    (["--size", "abc"], "bad size 'abc': give H or HxW"),
    (["--size", "0"], "size 0 is not a multiple of 32"),
    (["--batch-size", "0"], "bad --batch-size 0"),
    (["--epochs", "-3"], "bad --epochs -3"),
    (["--val-split", "0"], "bad --val-split 0.0"),
    (["--lr", "nan"], "bad --lr nan"),
    (["--mask", "surface"], "unknown --mask 'surface': choose one of regions, surfaces"),
])
def test_more_bad_options(args, message, tmp_path, capsys):
    assert message in _fails(train.main, [*args, "--out", tmp_path / "o"], capsys)


def test_unwritable_output_folder(tiny_iccv09, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _fails(train.main, ["--data", tiny_iccv09, "--out", blocker / "run"], capsys)
    assert f"{blocker / 'run'}: output folder is not writable" in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(KsegError, match="not a multiple of 32"):
        train.main(["--size", "100", "--debug", "--out", str(tmp_path / "o")])


# --------------------------------------------------------------------------- archives


def test_truncated_archives_are_refused_wherever_they_are_cut(tiny_iccv09, tmp_path):
    good = _archive_of(tiny_iccv09, tmp_path / "good.tar.gz").read_bytes()
    for i, cut in enumerate([1, 20, len(good) // 3, len(good) - 30, len(good) - 8, len(good) - 1]):
        bad = tmp_path / f"cut{i}.tar.gz"
        bad.write_bytes(good[:cut])
        with pytest.raises(KsegError, match=rf"cut{i}.tar.gz: not a readable .tar.gz archive"):
            ic.extract_archive(bad, tmp_path / f"out{i}", quiet=True)
        assert not (tmp_path / f"out{i}" / "iccv09Data").exists()
    # the whole archive still extracts
    assert (ic.extract_archive(tmp_path / "good.tar.gz", tmp_path / "ok", quiet=True) / "images").is_dir()


def test_full_disk_while_extracting(tiny_iccv09, tmp_path, monkeypatch, capsys):
    """A full disk mid-extraction: one line naming the archive and the folder; nothing half-extracted kept."""
    archive = _archive_of(tiny_iccv09, tmp_path / "iccv09Data.tar.gz")
    calls = []

    def full(src, dst, length=0):
        calls.append(dst.name)
        if len(calls) > 3:
            dst.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, length)

    import shutil

    real = shutil.copyfileobj
    monkeypatch.setattr(ic.shutil, "copyfileobj", full)
    monkeypatch.chdir(tmp_path)
    line = _fails(train.main, ["--data", archive, "--size", "32", "--out", tmp_path / "o"], capsys)
    assert f"{archive}: cannot extract into data (No space left on device)" in line
    assert not (tmp_path / "data" / "iccv09Data").exists()
    assert list((tmp_path / "data").iterdir()) == []  # the temporary folder is gone too


# --------------------------------------------------------------------------- unreadable images


def test_unreadable_images_are_skipped_with_a_warning_naming_each(tiny_iccv09, capsys):
    _truncate_jpeg(tiny_iccv09 / "images" / "0000002.jpg")  # good header, broken data: PIL's size works
    assert ic.image_size(tiny_iccv09 / "images" / "0000002.jpg") == (40, 48)
    (tiny_iccv09 / "images" / "0000004.jpg").write_bytes(b"this is text, not a JPEG")
    ds = load_iccv09(tiny_iccv09, mask="surfaces")
    assert ds.ids == ["0000000", "0000001", "0000003", "0000005"]
    assert [Path(p).name for p in ds.skipped] == ["0000002.jpg", "0000004.jpg"]
    assert len(ds.labels) == len(ds.image_paths) == 4
    err = capsys.readouterr().err
    for name in ("0000002.jpg", "0000004.jpg"):
        assert re.search(rf"kseg: warning: \S*{name}: not a readable image .*; skipping this image", err), err


def test_folder_loader_skips_unreadable_images_too(tmp_path, capsys):
    from PIL import Image

    from kseg.data import folder

    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(tmp_path / "d" / "images" / f"{name}.jpg")
        Image.fromarray(np.ones((32, 32), np.uint8)).save(tmp_path / "d" / "masks" / f"{name}.png")
    _truncate_jpeg(tmp_path / "d" / "images" / "b.jpg")
    ds = folder(tmp_path / "d", class_names="x,y")
    assert ds.ids == ["a", "c"] and [Path(p).name for p in ds.skipped] == ["b.jpg"]
    assert "b.jpg: not a readable image" in capsys.readouterr().err


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("models")
    _tiny_model(3).save(d / "three.keras")
    (d / "text.keras").write_text("not a model at all")
    (d / "empty.keras").write_bytes(b"")
    import zipfile

    with zipfile.ZipFile(d / "zip.keras", "w") as z:
        z.writestr("hello.txt", "a zip, but no Keras model in it")
    inp = keras.Input((32, 32, 3))
    keras.Model(inp, keras.layers.Lambda(lambda x: x * 0.0 + 1.0)(inp)).save(d / "lambda.keras")
    return d


@pytest.mark.parametrize("name", ["text.keras", "empty.keras", "zip.keras"])
@pytest.mark.parametrize("tool", ["evaluate", "predict", "export"])
def test_a_file_that_is_not_a_model(tool, name, model_files, tiny_iccv09, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"kseg.{tool}").main
    path = model_files / name
    args = {"evaluate": ["--model", path, "--data", tiny_iccv09, "--out", tmp_path / "o"],
            "predict": ["--model", path, tiny_iccv09 / "images" / "0000000.jpg", "--out", tmp_path / "o"],
            "export": ["--model", path, "--out", tmp_path / "o"]}[tool]
    line = _fails(main, args, capsys)
    assert f"{path}: not a loadable Keras model" in line


def test_loading_keeps_safe_mode_on(model_files, capsys):
    """A .keras file with a Lambda layer (arbitrary code) is refused, as Keras' safe mode does."""
    from kseg.export import load_model, main

    with pytest.raises(KsegError, match=r"lambda.keras: not a loadable Keras model .*safe_mode"):
        load_model(model_files / "lambda.keras")
    line = _fails(main, ["--model", model_files / "lambda.keras", "--out", model_files / "x"], capsys)
    assert "lambda.keras: not a loadable Keras model" in line


def test_a_model_saved_for_another_class_count(model_files, tiny_iccv09, tmp_path, capsys):
    from kseg import evaluate, predict

    path = model_files / "three.keras"
    line = _fails(evaluate.main, ["--model", path, "--data", tiny_iccv09, "--mask", "regions",
                                  "--out", tmp_path / "e"], capsys)
    assert f"{path}: the model predicts 3 classes but --mask regions has 8" in line
    line = _fails(predict.main, ["--model", path, tiny_iccv09 / "images" / "0000000.jpg", "--palette", "regions",
                                 "--out", tmp_path / "p"], capsys)
    assert f"{path}: the model predicts 3 classes but the regions palette has 8" in line


def test_predict_skips_unreadable_images_and_counts_them(model_files, tiny_iccv09, tmp_path, capsys):
    from kseg import predict

    images = tiny_iccv09 / "images"
    _truncate_jpeg(images / "0000001.jpg")
    assert predict.main(["--model", str(model_files / "three.keras"), str(images / "0000000.jpg"),
                         str(images / "0000001.jpg"), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "0000001.jpg: not a readable image" in out.err and "skipping this image" in out.err
    assert "wrote 1 class maps and overlays" in out.out and "skipped 1 unreadable image(s): 0000001.jpg" in out.out
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["0000000.png", "0000000_overlay.png"]
    line = _fails(predict.main, ["--model", model_files / "three.keras", images / "0000001.jpg",
                                 "--out", tmp_path / "q", "--quiet"], capsys)
    assert "0000001.jpg: none of the 1 input images could be read" in line


def test_unwritable_output_of_predict(model_files, tiny_iccv09, tmp_path, capsys):
    from kseg import predict

    (tmp_path / "f").write_text("")
    line = _fails(predict.main, ["--model", model_files / "three.keras", tiny_iccv09 / "images" / "0000000.jpg",
                                 "--out", tmp_path / "f" / "o", "--quiet"], capsys)
    assert f"{tmp_path / 'f' / 'o'}: cannot create the output folder" in line


# --------------------------------------------------------------------------- full disk, atomic writes


def test_full_disk_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_text_atomic(target, '{"old": 1}')

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # the disk fills up as the data reach it
    with pytest.raises(KsegError, match=r"metrics.json: cannot write the metrics \(No space left on device\)"):
        write_text_atomic(target, '{"new": 2}', "metrics")
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left


def test_cli_reports_a_raw_disk_error_in_one_line(capsys):
    @cli_entry
    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/history.csv")

    assert _fails(main, [], capsys) == "kseg: error: /runs/x/history.csv: No space left on device"


def test_checkpoint_is_atomic_and_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    import keras

    from kseg.export import load_model

    model = _tiny_model()
    model.compile("adam", "mse")
    rec = train.RunRecorder(tmp_path / "history.csv", [], tmp_path / "best.keras", "val_loss")
    rec.set_model(model)
    rec.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    first = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in first])

    def full_disk(self, filepath, *a, **k):
        Path(filepath).write_bytes(b"PK\x03\x04 half a zip")  # what a full disk leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(KsegError, match=r"best.keras: cannot write the checkpoint \(No space left on device\); "
                                        r"the previous best.keras, if any, is unchanged"):
        rec.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.5})
    monkeypatch.undo()
    for a, b in zip(load_model(tmp_path / "best.keras").get_weights(), first):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "history.csv"]
    with open(tmp_path / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]


def test_a_kill_between_weights_and_state_resumes_from_the_previous_epoch(tmp_path, monkeypatch):
    model = _tiny_model()
    model.compile("adam", "mse")
    model.optimizer.build(model.trainable_variables)  # as after a first training step
    backup = tmp_path / ".backup"
    config = {"model": "m"}
    recorder = SimpleNamespace(nan_at=None, last_good_epoch=0)
    cb = train.ResumeState(backup, config, recorder)
    cb.set_model(model)
    cb.on_epoch_end(0)
    saved = [w.copy() for w in model.get_weights()]
    assert train.read_resume_state(backup, config)["epoch"] == 1

    class Killed(BaseException):
        pass

    def killed(*a, **k):
        raise Killed()

    model.set_weights([w + 1 for w in saved])
    recorder.last_good_epoch = 1
    from kseg.training import callbacks

    monkeypatch.setattr(callbacks, "write_text_atomic", killed)
    with pytest.raises(Killed):
        cb.on_epoch_end(1)  # epoch-2 weights are written, then the process dies before state.json
    state = train.read_resume_state(backup, config)
    assert state["epoch"] == 1 and state["weights"] == "epoch-1.weights.h5"
    fresh = _tiny_model()
    fresh.compile("adam", "mse")
    assert train.restore_resume_state(fresh, backup, state, 1e-3) == 1
    for a, b in zip(fresh.get_weights(), saved):
        np.testing.assert_array_equal(a, b)


def test_resume_state_of_other_options_or_damaged_is_an_error(tmp_path):
    backup = tmp_path / ".backup"
    backup.mkdir()
    (backup / "epoch-2.weights.h5").write_bytes(b"")
    (backup / "state.json").write_text(json.dumps({"epoch": 2, "weights": "epoch-2.weights.h5",
                                                   "config": {"backbone": "resnet18", "size": [32, 32]}}))
    with pytest.raises(KsegError, match=r"holds an interrupted run with other options \(backbone 'resnet18', "
                                        r"not 'plain'\).*delete"):
        train.read_resume_state(backup, {"backbone": "plain", "size": [32, 32]})
    (backup / "state.json").write_text('{"epoch": 2, "weig')  # damaged by hand: never written by kseg like this
    with pytest.raises(KsegError, match=r"state.json: unreadable resume state .*delete"):
        train.read_resume_state(backup, {})


def test_a_logged_but_unsaved_epoch_is_not_repeated_in_the_history(tmp_path):
    """history.csv may hold a row for an epoch whose resume state a kill prevented: it runs again, logged once."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,1.0,1.1\n1,0.9,1.0\n2,0.8,0.95\n")
    rows = train._read_history(path, before_epoch=2)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert train._best_so_far(rows, "val_loss") == (1.0, 1)


def test_label_cache_of_another_kseg_version_is_rebuilt(tiny_iccv09, tmp_path, monkeypatch):
    import kseg

    paths = sorted((tiny_iccv09 / "labels").glob("*.surfaces.txt"))
    cache = tmp_path / "c.bin"
    ic.load_labels(paths, 3, cache)
    assert ic.load_labels(paths, 3, cache)[1]["parsed"] == 0
    monkeypatch.setattr(kseg, "__version__", kseg.__version__ + ".post1")
    assert ic.load_labels(paths, 3, cache)[1]["parsed"] == 6


# --------------------------------------------------------------------------- training runs


TRAIN = ["--size", "32", "--batch-size", "3", "--backbone", "plain", "--no-export", "--verbose", "2"]


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tiny_iccv09, tmp_path, monkeypatch, capsys):
    import keras

    from kseg.export import load_model

    class PoisonEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # the weights blow up: every loss from now on is NaN
                for v in self.model.trainable_variables:
                    v.assign(np.full(v.shape, np.nan, "float32"))

    fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fit(
        self, *a, **{**k, "callbacks": list(k["callbacks"]) + [PoisonEpoch2()]}))
    out = tmp_path / "out"
    line = _fails(train.main, ["--data", tiny_iccv09, "--epochs", "3", "--out", out, *TRAIN], capsys)
    assert f"{out / 'history.csv'}: the loss became NaN in epoch 2, batch 1; training stopped" in line
    assert f"the last good checkpoint {out / 'best.keras'} (epoch 1) is kept" in line
    assert "resumes after epoch 1" in line
    weights = load_model(out / "best.keras").get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]  # epoch 3 never ran
    assert np.isfinite(float(rows[0]["loss"])) and np.isnan(float(rows[1]["loss"]))
    assert not (out / "metrics.json").exists() and not (out / "saved_model").exists()
    assert json.loads((out / ".backup" / "state.json").read_text())["epoch"] == 1  # the last good state


PAUSE_HOOK = '''
import os
_marker = os.environ.get("KSEG_TEST_PAUSE_IN_EPOCH_2")
if _marker:  # pin the kill inside epoch 2: after its first batch, say so and wait to be killed
    import time
    import keras

    class _Pause(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1:
                with open(_marker, "w") as f:
                    f.write(str(batch))
                time.sleep(600)

    _fit = keras.Model.fit

    def _fit_with_pause(self, *args, **kwargs):
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [_Pause()]
        return _fit(self, *args, **kwargs)

    keras.Model.fit = _fit_with_pause
'''


def test_sigkill_during_epoch_2_then_the_same_command_resumes(tiny_iccv09, tmp_path):
    """A real ``python -m kseg.train`` killed inside epoch 2 of 3; the same command finishes the run.

    One of the images is a damaged JPEG (a good header; it used to crash TF's decoder mid-epoch):
    both runs skip it with a warning naming it, and the finished run counts it in its summary
    (one full run checks both, to keep the suite fast).
    """
    _truncate_jpeg(tiny_iccv09 / "images" / "0000005.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kseg.train", "--data", str(tiny_iccv09), "--epochs", "3", "--out", str(out),
           "--cache-dir", str(tmp_path / "cache"), *TRAIN]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    marker = tmp_path / "in-epoch-2"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first_env = {**env, "KSEG_TEST_PAUSE_IN_EPOCH_2": str(marker),
                 "PYTHONPATH": os.pathsep.join([str(hook), env.get("PYTHONPATH", "")])}
    with open(tmp_path / "run1.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=first_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 300
            while not marker.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.1)
            assert marker.exists(), (tmp_path / "run1.log").read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with open(out / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0"]  # killed inside epoch 2
    assert json.loads((out / ".backup" / "state.json").read_text())["epoch"] == 1

    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {out / '.backup'} at epoch 2 of 3" in res.stdout
    assert "Epoch 1/3" not in res.stdout and "Epoch 2/3" in res.stdout and "Epoch 3/3" in res.stdout
    with open(out / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    assert (out / "best.keras").exists() and (out / "metrics.json").exists()
    assert not (out / ".backup").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    # the damaged image: a warning naming it, counted at the start and in the final summary, and in metrics.json
    assert "0000005.jpg: not a readable image" in res.stderr and "skipping this image" in res.stderr
    assert "kseg: 5 images from" in res.stdout and "(skipped 1 unreadable image(s))" in res.stdout
    assert "skipped 1 unreadable image(s): 0000005.jpg" in res.stdout.strip().splitlines()[-1]
    report = json.loads((out / "metrics.json").read_text())
    assert [Path(p).name for p in report["skipped_images"]] == ["0000005.jpg"]
    assert report["train_images"] + report["val_images"] == 5


# --------------------------------------------------------------------------- fuzzing

_TOKEN = re.compile(rb"[+-]?[0-9]{1,9}")


def _reference_parse(data: bytes):
    """What the label parser must return: a rectangular matrix of integer tokens, else None (an error)."""
    lines = [[t for t in re.split(rb"[ \t\r]+", ln) if t] for ln in data.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or any(not ln or len(ln) != len(lines[0]) for ln in lines):
        return None
    if not all(_TOKEN.fullmatch(t) for ln in lines for t in ln):
        return None
    return np.array([[int(t) for t in ln] for ln in lines], np.int64)


_tokens = st.one_of(st.integers(-1, 12).map(str), st.integers(-10**10, 10**10).map(str),
                    st.sampled_from(["1.5", "x", "--1", "+", "-", "1-2", "", "nan", "\x00", "७"]))
_matrices = st.lists(st.lists(_tokens, max_size=6), max_size=6).flatmap(
    lambda rows: st.tuples(st.just(rows), st.sampled_from([" ", "  ", "\t", " \r"]),
                           st.sampled_from(["\n", "\r\n", "\n\n"]), st.booleans())).map(
    lambda t: (t[2].join(t[1].join(r) for r in t[0]) + ("\n" if t[3] else "")).encode())


def _mutate(text: bytes, edits) -> bytes:
    out = bytearray(text)
    for pos, byte in edits:
        if out:
            out[pos % len(out)] = byte
    return bytes(out)


# iccv09's own layout ("d d\nd d\n", -1 for unknown), the fast path's input, with a few bytes overwritten
_iccv09_like = st.tuples(
    st.lists(st.lists(st.integers(-1, 9).map(str), min_size=1, max_size=5), min_size=1, max_size=5).map(
        lambda rows: "".join(" ".join(r) + "\n" for r in rows).encode()),
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(list(b"0123456789 \n-:x"))), max_size=3)).map(
    lambda t: _mutate(*t))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), _matrices, _iccv09_like,
                 st.lists(st.sampled_from(list(b"0123456789 \t\r\n-+x")), max_size=120).map(bytes)))
@example(b":\n")  # found by this test: the "d d\n" fast path read a ':' of the content as -1
@example(b"1 :\n2 3\n")
@example(b"--1\n")  # found by this test: the "-1" fast path read two signs before one '1' as -1
def test_fuzz_label_parser_only_raises_kseg_errors(data):
    expected = _reference_parse(data)
    try:
        got = parse_label_text(data, "fuzz.surfaces.txt")
    except KsegError as err:
        assert str(err).startswith("fuzz.surfaces.txt: ")
        assert expected is None, (data, expected)
        return
    assert expected is not None, (data, got)
    np.testing.assert_array_equal(got, expected)


def _valid_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [("iccv09Data/images/a.jpg", b"\xff\xd8\xff\xe0 jpeg"),
                           ("iccv09Data/labels/a.surfaces.txt", b"0 1\n2 -1\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_VALID = _valid_archive()
_RAW = gzip.decompress(_VALID)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_archive_reader_only_raises_kseg_errors(data):
    kind = data.draw(st.sampled_from(["random", "flip", "cut", "tar-flip", "tar-cut"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=600))
    else:
        blob = bytearray(_VALID if kind in ("flip", "cut") else _RAW)
        if kind.endswith("flip"):
            for _ in range(data.draw(st.integers(1, 8))):
                blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        else:
            blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
        blob = gzip.compress(bytes(blob)) if kind.startswith("tar") and data.draw(st.booleans()) else bytes(blob)
    with tempfile.TemporaryDirectory() as d:
        archive = Path(d) / "iccv09Data.tar.gz"
        archive.write_bytes(blob)
        try:
            root = ic.extract_archive(archive, Path(d) / "out", quiet=True)
        except KsegError as err:
            assert str(err).startswith(str(archive))
            assert not (Path(d) / "out" / "iccv09Data").exists()
        else:
            assert root == Path(d) / "out" / "iccv09Data" and (root / ".kseg-extracted").exists()
            for p in root.rglob("*"):  # whatever was accepted landed inside, as plain files and folders
                assert not p.is_symlink() and p.resolve().is_relative_to(root.resolve())
