"""The notebooks' Colab set-up cell (run here with a stand-in for google.colab) and README's Colab badges."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import pytest
from conftest import REPO


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", REPO / "notebooks" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """Run the set-up cell as Colab would, with /content at ``tmp_path / "content"``: returns a function
    ``run(source="", keep_on_drive=False, upload=())`` -> (the cell's globals, pip commands, mounts)."""
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.chdir(content)
    pip, mounts = [], []

    def run(source="", keep_on_drive=False, upload=()):
        colab_module = types.ModuleType("google.colab")
        colab_module.drive = types.SimpleNamespace(mount=lambda path: (mounts.append(path),
                                                                       (content / "drive/MyDrive/kseg").mkdir(
                                                                           parents=True, exist_ok=True)))

        def files_upload():
            for name in upload:
                (content / name).write_bytes(b"wheel")
            return {name: b"wheel" for name in upload}

        colab_module.files = types.SimpleNamespace(upload=files_upload)
        google = types.ModuleType("google")
        google.colab = colab_module
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", colab_module)
        monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: pip.append(cmd))
        monkeypatch.delenv("KSEG_PIP", raising=False)
        code = (_builder().SETUP.replace("/content", str(content))
                .replace('KSEG_SOURCE = ""', f"KSEG_SOURCE = {source!r}")
                .replace("KEEP_ON_DRIVE = False", f"KEEP_ON_DRIVE = {keep_on_drive}"))
        scope: dict = {}
        exec(compile(code, "setup-cell", "exec"), scope)
        return scope, pip, mounts

    run.content = content
    return run


def test_colab_installs_the_wheel_in_content_and_keeps_runs_local(colab):
    (colab.content / "kseg-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    scope, pip, mounts = colab()
    assert pip == [[sys.executable, "-m", "pip", "install", "-q", str(colab.content / "kseg-0.1.0-py3-none-any.whl")]]
    assert not mounts and str(scope["RUNS"]) == "runs" and scope["COLAB"]


def test_colab_keeps_runs_on_drive_and_finds_the_wheel_there(colab):
    drive = colab.content / "drive/MyDrive/kseg"
    drive.mkdir(parents=True)
    (drive / "kseg-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    scope, pip, mounts = colab(keep_on_drive=True)
    assert mounts == [str(colab.content / "drive")]
    assert scope["RUNS"] == drive / "runs"
    assert pip[0][-1] == str(drive / "kseg-0.1.0-py3-none-any.whl")


def test_colab_source_wins_and_a_git_url_is_passed_to_pip(colab):
    (colab.content / "kseg-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    _, pip, _ = colab(source="git+https://example.org/me/kseg.git")
    assert pip[0][-1] == "git+https://example.org/me/kseg.git"


def test_colab_asks_for_a_wheel_when_it_finds_none(colab, capsys):
    _, pip, _ = colab(upload=("kseg-0.1.0-py3-none-any.whl",))
    assert pip[0][-1] == str(colab.content / "kseg-0.1.0-py3-none-any.whl")
    assert "Upload kseg's wheel" in capsys.readouterr().out


def test_colab_without_any_wheel_stops_in_one_line(colab):
    with pytest.raises(SystemExit, match="no wheel uploaded and no KSEG_SOURCE"):
        colab()


def test_readme_badges_open_each_notebook_of_the_repository():
    build = _builder()
    readme = (REPO / "README.md").read_text()
    assert all(marker in readme for marker in build.BADGES)
    out = build.colab_badges(readme, "someone/kseg")
    for name in ("tutorial", "own_data"):
        assert (f"(https://colab.research.google.com/github/someone/kseg/blob/main/notebooks/{name}.ipynb)"
                in out)
    assert build.colab_badges(out, "other/kseg").count("colab-badge.svg") == 2  # replaced, not added
    with pytest.raises(SystemExit, match="bad --repo"):
        build.colab_badges(readme, "https://github.com/someone/kseg")


def test_the_committed_notebooks_are_what_the_builder_writes():
    import nbformat

    build = _builder()
    for name, cells in zip(build.NOTEBOOKS, (build.tutorial(), build.own_data())):
        committed = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in cells], name
