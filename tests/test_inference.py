"""The library under the commands: kseg.shapes (the size rule), kseg.evaldata, and which modules import which."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import kseg
from kseg import shapes
from kseg.errors import KsegError

KSEG = Path(kseg.__file__).parent
# the command modules (and the entry point): nothing else in kseg may import them
COMMANDS = {"kseg.train", "kseg.evaluate", "kseg.predict", "kseg.export", "kseg.cli", "kseg.data.annotations",
            "kseg.data.shapes", "kseg.__main__"}


def test_check_size_normalises_and_names_the_nearest_valid_sizes():
    assert shapes.check_size(64) == (64, 64)
    assert shapes.check_size("64x96") == (64, 96)
    assert shapes.check_size("64,96") == (64, 96)
    assert shapes.check_size(np.int64(32)) == (32, 32)
    assert shapes.check_size((224, 320)) == (224, 320)
    with pytest.raises(shapes.SizeError, match=r"^size 100 is not a multiple of 32: use 96 or 128$"):
        shapes.check_size("100x64")
    with pytest.raises(shapes.SizeError, match=r"^size 0 is not a multiple of 32: use 32$"):
        shapes.check_size(0)
    with pytest.raises(shapes.SizeError, match=r"^bad size 'big': give H or HxW, e.g. 224 or 256x320$"):
        shapes.check_size("big")
    with pytest.raises(shapes.SizeError, match=r"^bad size \(32, 32, 32\): give H or HxW"):
        shapes.check_size((32, 32, 32))


def test_check_multiple_names_what_it_checks():
    assert shapes.check_multiple(96) == 96
    with pytest.raises(shapes.SizeError, match=r"^input size 33 is not a multiple of 32: use 32 or 64$"):
        shapes.check_multiple(33, "input size")
    with pytest.raises(KsegError):  # a user's error: one line, exit 2
        shapes.check_multiple(-32)
    with pytest.raises(ValueError):  # and still a ValueError for library callers
        shapes.check_multiple(31)


def test_nearest_multiples_hint():
    assert [shapes.nearest_multiples(v) for v in (1, 31, 32, 33, 250, 256)] == \
        ["32", "32", "32", "32 or 64", "224 or 256", "256"]


def test_nearest_multiple_on_numbers_and_tensors():
    import tensorflow as tf

    assert [shapes.nearest_multiple(v) for v in (1, 47, 49, 100.0, 239)] == [32, 32, 64, 96, 224]
    assert int(shapes.nearest_multiple(tf.constant(100))) == 96
    for v in (208, 240, 80):  # half-way: both round half to even, so serving and kseg.predict agree
        assert int(shapes.nearest_multiple(tf.constant(v))) == shapes.nearest_multiple(v)
    assert shapes.nearest_multiple(100, multiple=16) == 96


def test_the_rule_is_one_rule_everywhere():
    from kseg import export
    from kseg.data import pipeline
    from kseg.models.layers import check_input_shape

    assert pipeline.SizeError is shapes.SizeError and pipeline.check_size is shapes.check_size
    assert pipeline.MULTIPLE == export.MULTIPLE == shapes.MULTIPLE == 32
    assert export.nearest_multiple is shapes.nearest_multiple
    assert check_input_shape((None, 64, 3)) == (None, 64, 3)
    with pytest.raises(shapes.SizeError, match=r"^input size 40 is not a multiple of 32: use 32 or 64$"):
        check_input_shape((40, 64, 3))


def test_fixed_input_size():
    from conftest import tiny_model

    assert shapes.fixed_input_size(tiny_model((64, 96))) == (64, 96)
    assert shapes.fixed_input_size(tiny_model(None)) is None


def test_split_positions_and_the_training_overlap_warning(capsys):
    from kseg.evaldata import check_training_overlap, split_positions

    data = type("Data", (), {"ids": [f"img{i}" for i in range(10)], "__len__": lambda self: 10})()
    assert split_positions(data, "all").tolist() == list(range(10))
    val = split_positions(data, "val", val_split=0.2, seed=42)
    assert len(val) == 2 and set(val.tolist()) <= set(range(10))
    assert check_training_overlap(["img1", "img2"], None) is None
    assert check_training_overlap(["img1", "img2"], ["img3"]) == 0
    assert capsys.readouterr().err == ""
    assert check_training_overlap(["img1", "img2"], ["img2", "img3"]) == 1
    assert capsys.readouterr().err == ("kseg: warning: 1 of the 2 images scored are training images of this run "
                                       "(run.json train_ids): the scores overstate how the model does on new "
                                       "images\n")


def test_run_positions_finds_the_runs_images_by_id(capsys):
    from kseg.evaldata import run_positions

    data = SimpleNamespace(ids=["a", "b", "c"], root="/data")
    _, idx = run_positions(data, ["c", "a", "x"], None, lambda: pytest.fail("no reload without a limit"))
    assert idx.tolist() == [0, 2]
    assert capsys.readouterr().err == ("kseg: warning: 1 of the run's 3 validation images are not in /data "
                                       "(e.g. x): scoring the 2 found\n")
    with pytest.raises(KsegError, match=r"^/data: none of the run's 1 validation images \(run.json val_ids, "
                                        r"e.g. y\) is here: pass the run's data with --data$"):
        run_positions(data, ["y"], None, lambda: data)


def _imports(path: Path) -> set[str]:
    """The kseg modules ``path`` imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m == "kseg" or m.startswith("kseg.")}


def test_no_library_module_imports_a_command():
    offenders = []
    for path in sorted(KSEG.rglob("*.py")):
        module = ".".join(path.relative_to(KSEG.parent).with_suffix("").parts).removesuffix(".__init__")
        if module in COMMANDS:
            continue
        bad = sorted(_imports(path) & COMMANDS)
        if bad:
            offenders.append(f"{module} imports {', '.join(bad)}")
    assert offenders == []
