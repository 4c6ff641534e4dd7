"""kseg.startup: which processes are kseg commands, and the quiet start of TensorFlow."""

from __future__ import annotations

import os
import sys

import pytest

from kseg import startup

# what TensorFlow 2.21 writes on stderr while a command starts on a CPU machine (measured)
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796413036.333906   29179 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. "
    "To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796413036.334315   29179 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "I0000 00:00:1796413042.726444   29201 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
    "E0000 00:00:1796413133.589423   29353 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
]
KEPT = [
    "kseg: warning: 3 masks hold no foreground",
    "E0000 00:00:1796413133.589423   29353 some_kernel.cc:52] Out of memory while allocating",
    "/usr/lib/python3/site-packages/foo.py:3: DeprecationWarning: bar",
]


@pytest.mark.parametrize("argv, expected", [
    (["python", "-m", "kseg", "--help"], True),
    (["python", "-m", "kseg.train", "--epochs", "3"], True),
    (["python", "-mkseg.data.annotations"], True),
    (["python", "-X", "importtime", "-u", "-m", "kseg.export"], True),
    (["python", "-W", "ignore", "-m", "kseg"], True),
    (["/venv/bin/python3", "/venv/bin/kseg", "train"], True),
    (["python", "-I", "/venv/bin/kseg"], True),
    (["python", "-m", "kseg_other"], False),
    (["python", "-m", "ksegx.train"], False),
    (["python", "-m", "pytest", "-m", "kseg"], False),
    (["python", "-c", "import kseg", "-m", "kseg"], False),
    (["python", "train.py", "kseg"], False),
    (["python", "kseg.py"], False),
    (["python"], False),
    ([], False),
])
def test_is_command(argv, expected):
    assert startup.is_command(argv) is expected


def test_this_test_process_is_not_a_command():
    assert startup.is_command() is False


def test_drop_startup_noise_keeps_everything_else():
    text = "\n".join([NOISE[0], KEPT[0], *NOISE[1:4], KEPT[1], NOISE[4], KEPT[2], NOISE[5]]) + "\n"
    assert startup.drop_startup_noise(text) == "\n".join(KEPT) + "\n"


def test_filtered_stderr_filters_what_cpp_and_python_write(capfd):
    with startup.filtered_stderr():
        os.write(2, ("\n".join(NOISE) + "\n").encode())  # as TensorFlow's C++ code writes: on the descriptor
        print(KEPT[0], file=sys.stderr)
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == f"{KEPT[0]}\nafter\n"


def test_filtered_stderr_gives_back_everything_when_the_block_fails(capfd):
    with pytest.raises(ImportError):
        with startup.filtered_stderr():
            os.write(2, f"{NOISE[0]}\n{KEPT[1]}\n".encode())
            raise ImportError("libcudart.so: cannot open shared object file")
    assert capfd.readouterr().err == f"{NOISE[0]}\n{KEPT[1]}\n"


@pytest.fixture
def before_tensorflow(monkeypatch):
    """This process as a command sees it before TensorFlow's import (nothing is imported meanwhile)."""
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(startup, "_prepared", False)
    for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        monkeypatch.delenv(name, raising=False)


def test_prepare_quiets_tensorflow_and_turns_onednn_on(before_tensorflow, monkeypatch):
    monkeypatch.setattr(startup.platform, "machine", lambda: "x86_64")
    startup.prepare(debug=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert isinstance(sys.meta_path[0], startup._QuietTensorFlowFinder)
    sys.meta_path.pop(0)
    startup.prepare(debug=False)  # once only
    assert not isinstance(sys.meta_path[0], startup._QuietTensorFlowFinder)


def test_prepare_with_debug_keeps_tensorflow_messages(before_tensorflow, monkeypatch):
    monkeypatch.setattr(startup.platform, "machine", lambda: "x86_64")
    startup.prepare(debug=True)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert not any(isinstance(f, startup._QuietTensorFlowFinder) for f in sys.meta_path)


def test_prepare_leaves_a_users_choice_and_other_cpus(before_tensorflow, monkeypatch):
    monkeypatch.setattr(startup.platform, "machine", lambda: "aarch64")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    startup.prepare(debug=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ


def test_debug_requested(monkeypatch):
    monkeypatch.delenv("KSEG_DEBUG", raising=False)
    assert startup.debug_requested(["python", "-m", "kseg.train", "--debug"]) is True
    assert startup.debug_requested(["python", "-m", "kseg.train"]) is False
    monkeypatch.setenv("KSEG_DEBUG", "1")
    assert startup.debug_requested(["python", "-m", "kseg.train"]) is True
