"""The ``kseg`` command (kseg.cli) and ``python -m kseg``."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import kseg
from kseg import cli

REPO = Path(__file__).resolve().parents[1]
NAMES = ("train", "evaluate", "predict", "export", "import")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_help_lists_each_command_on_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kseg <command>")
    for name in NAMES:
        lines = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert len(lines) == 1, name
        assert lines[0].startswith(f"  {name} ")
        assert len(lines[0].split()) > 2, f"{name} has no description"
    assert "\n  -h, --help  show this help and exit\n" in out
    assert "\n  --version   print kseg's version and exit\n" in out
    assert cli.main(["-h"]) == 0
    assert capsys.readouterr().out == out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"kseg {kseg.__version__}\n"


def test_unknown_command_is_one_line_naming_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["trian", "--epochs", "3"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("kseg: error: unknown command 'trian': choose one of "
                            "train, evaluate, predict, export, import, shapes\n")


def test_no_command_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("kseg: error: give a command: train, evaluate, predict, export, import")
    assert err.count("\n") == 1


@pytest.mark.parametrize("name", NAMES)
def test_each_command_runs_its_module_main_with_the_rest(name, monkeypatch):
    seen = []
    fake = types.ModuleType(cli.COMMANDS[name][0])
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, cli.COMMANDS[name][0], fake)
    assert cli.main([name, "--out", "x", "a.jpg"]) == 3
    assert seen == [["--out", "x", "a.jpg"]]


def test_commands_map_to_the_modules_that_hold_them():
    assert {name: module for name, (module, _) in cli.COMMANDS.items()} == {
        "train": "kseg.train", "evaluate": "kseg.evaluate", "predict": "kseg.predict",
        "export": "kseg.export", "import": "kseg.data.annotations", "shapes": "kseg.data.shapes"}


def test_a_missing_command_module_is_one_line(monkeypatch, capsys):
    # None in sys.modules makes the import fail as a module that is not installed does
    monkeypatch.setitem(sys.modules, "kseg.data.annotations", None)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["import", "somewhere"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("kseg: error: 'kseg import' is not available in this kseg installation "
                                       "(no module kseg.data.annotations)\n")


def test_a_dependency_missing_inside_a_command_module_is_not_hidden(monkeypatch):
    def broken(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'cv2'", name="cv2")

    monkeypatch.setattr(cli.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="cv2"):
        cli.main(["predict", "a.jpg"])


def test_train_reaches_kseg_train_and_its_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--epochs", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "kseg: error: bad --epochs 0: give a positive integer\n"


def _imported(stderr: str) -> set[str]:
    """The modules ``python -X importtime`` reports on stderr."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["-m", "kseg", "--help"], ["-m", "kseg", "--version"],
                                  ["-m", "kseg", "train", "--help"], ["-m", "kseg.export", "--help"]])
def test_help_and_version_answer_without_tensorflow(args):
    """``import kseg`` imports TensorFlow for a library user; a kseg command imports only what it runs."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                            env=_env(), cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: " if "--help" in args else "kseg ")
    modules = _imported(result.stderr)
    assert "kseg" in modules  # the probe works
    assert not {"tensorflow", "keras"} & modules


def test_python_m_kseg_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "kseg", "--help"], capture_output=True, text=True,
                            env=_env(), cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kseg <command>")
    assert all(f"  {name} " in result.stdout for name in NAMES)


@pytest.mark.parametrize("command", ["train", "export"])
def test_a_command_starts_tensorflow_quietly(command, tmp_path):
    """TensorFlow's start-up lines (absl banner, oneDNN and CUDA notes, cuInit) do not reach the user:
    a failing command prints its one kseg line and nothing else."""
    garbage = tmp_path / "notes.keras"
    garbage.write_text("not a model")
    args, line = {
        "train": (["--epochs", "0"], "kseg: error: bad --epochs 0: give a positive integer"),
        "export": (["--model", str(garbage), "--out", str(tmp_path / "out")],  # loading imports TensorFlow
                   f"kseg: error: {garbage}: not a loadable Keras model ("),
    }[command]
    env = _env()
    env.pop("KSEG_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", f"kseg.{command}", *args], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr


def test_python_m_kseg_unknown_command_exit_status():
    result = subprocess.run([sys.executable, "-m", "kseg", "segment"], capture_output=True, text=True,
                            env=_env(), cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr == ("kseg: error: unknown command 'segment': choose one of "
                             "train, evaluate, predict, export, import, shapes\n")


def test_setup_cfg_declares_the_console_command():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options.entry_points"]["console_scripts"].split() == ["kseg", "=", "kseg.cli:main"]


def _parser_of(command: str, monkeypatch):
    """The parser ``kseg COMMAND`` builds, caught when it parses (nothing runs)."""
    import argparse

    caught = []

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        cli.main([command])
    return caught[-1]


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_option_has_help_and_says_its_default(command, monkeypatch):
    import argparse

    p = _parser_of(command, monkeypatch)
    assert p.prog == f"kseg {command}"  # the usage line names the command as typed
    text = " ".join(p.format_help().split())
    options = [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert len(options) >= 5
    for action in options:
        assert action.help and len(action.help) > 8, action.option_strings
        default = action.default
        if default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help:
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
            assert f"(default: {shown})" in text, action.option_strings


def test_train_names_the_architecture_arch_and_still_takes_model(monkeypatch):
    p = _parser_of("train", monkeypatch)
    monkeypatch.undo()
    assert p.parse_args(["--arch", "fcn"]).model == "fcn"
    assert p.parse_args(["--model", "fcn"]).model == "fcn"
    assert "--arch ARCH, --model ARCH" in p.format_help()


def test_python_m_names_the_module_in_usage():
    from kseg.commandline import command_parser

    assert command_parser("kseg.export", "d").prog == "python -m kseg.export"
