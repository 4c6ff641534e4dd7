"""How a kseg command starts: fast, quiet, and with TensorFlow's oneDNN kernels on.

``import kseg`` runs first in every command (the ``kseg`` script, ``python -m kseg``,
``python -m kseg.train``, ...). When it sees that the process is such a command
(:func:`is_command`) it does not import TensorFlow itself (``kseg --help``, ``kseg
train --help`` and option errors answer without it) and calls :func:`prepare`,
which, before TensorFlow is first imported,

- sets ``TF_ENABLE_ONEDNN_OPTS=1`` on x86 CPUs unless it is set: TensorFlow's x86
  wheels turn oneDNN on by default only on CPUs with AVX-512 VNNI / BF16 or AMX, and
  on other x86 CPUs (AVX2, AMD) its convolutions train kseg's models about 1.5x
  faster than the Eigen fallback (``TF_ENABLE_ONEDNN_OPTS=0`` keeps it off);
- sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set (TensorFlow's C++ info and warning lines);
- sends file descriptor 2 into a buffer while TensorFlow is imported and lists its
  devices, then writes back everything but TensorFlow's start-up lines (the
  ``absl::InitializeLog()`` banner, info and warning lines, and on a machine without
  a GPU ``failed call to cuInit``), which ``TF_CPP_MIN_LOG_LEVEL`` does not reach:
  they are logged before TensorFlow reads it. Everything else written meanwhile
  (Python warnings, other errors) comes back in order, and all of it if the import fails.

``--debug`` on the command line or ``KSEG_DEBUG=1`` keeps TensorFlow's messages
(oneDNN stays on). A program that imports kseg as a library gets none of this:
its environment is its own (set ``TF_ENABLE_ONEDNN_OPTS=1`` before importing kseg
or TensorFlow for oneDNN on such CPUs).

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import tempfile

SCRIPT_NAMES = ("kseg", "kseg.exe", "kseg-script.py")
# interpreter options that take a value (``python -X importtime -m kseg``)
_OPTIONS_WITH_VALUE = "XW"
_LONG_OPTIONS_WITH_VALUE = ("--check-hash-based-pycs",)

# TensorFlow's start-up lines on stderr: absl's banner, info/warning lines and the cuInit failure of a
# machine without a GPU (absl's format: I0000 00:00:1796413036.333906   29179 port.cc:153] ...)
_LOG_PREFIX = r"\d{4} [\d:.]+ +\d+ \S+:\d+\] "
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rf"|[IW]{_LOG_PREFIX}.*"
    rf"|E{_LOG_PREFIX}failed call to cuInit: .*"
    r"|To enable the following instructions: .*in other operations, rebuild TensorFlow .*)$")

_prepared = False


def is_command(argv: list[str] | None = None) -> bool:
    """Whether this process runs a kseg command: the ``kseg`` script or ``python -m kseg[.module]``.

    Reads the interpreter's own command line (``sys.orig_argv``, or ``argv``): its
    ``-m`` module, or else the script it runs. ``python -c``, a Python prompt, another
    program or ``python -m pytest`` that imports kseg is not a command.
    """
    argv = list(getattr(sys, "orig_argv", None) or []) if argv is None else list(argv)
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            return os.path.basename(arg) in SCRIPT_NAMES
        if arg.startswith("--"):
            if arg in _LONG_OPTIONS_WITH_VALUE:
                next(args, None)
            continue
        for i, flag in enumerate(arg[1:], start=1):
            if flag in "cm" or flag in _OPTIONS_WITH_VALUE:
                value = arg[i + 1:] or next(args, "")
                if flag == "m":
                    return value == "kseg" or value.startswith("kseg.")
                if flag == "c":
                    return False
                break  # -X / -W and their value
    script = next(args, None)
    return script is not None and os.path.basename(script) in SCRIPT_NAMES


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` on the command line or ``KSEG_DEBUG=1``."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv) if argv is None else list(argv)
    return "--debug" in argv or os.environ.get("KSEG_DEBUG") == "1"


def prepare(debug: bool | None = None) -> None:
    """Set a command's TensorFlow environment and quiet its start-up (see the module's docstring).

    Does nothing once TensorFlow is imported (its settings are read at import) or a second time.
    """
    global _prepared
    if _prepared or "tensorflow" in sys.modules:
        return
    _prepared = True
    debug = debug_requested() if debug is None else debug
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if debug:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


def drop_startup_noise(text: str) -> str:
    """``text`` without TensorFlow's start-up lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not _NOISE.match(line.rstrip("\r\n")))


@contextlib.contextmanager
def filtered_stderr():
    """Buffer what is written to file descriptor 2 (C++ and Python alike); on exit write it back to
    stderr without TensorFlow's start-up lines, or all of it if the block raised."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no stderr to redirect
        yield
        return
    buffer = tempfile.TemporaryFile()
    raised = True
    try:
        os.dup2(buffer.fileno(), 2)
        yield
        raised = False
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        buffer.seek(0)
        text = buffer.read().decode("utf-8", errors="replace")
        buffer.close()
        text = text if raised else drop_startup_noise(text)
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()


class _QuietLoader:
    """Runs TensorFlow's import, then its first device query, inside :func:`filtered_stderr`."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader  # TensorFlow sees its own loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)
            with contextlib.suppress(Exception):  # the CUDA probe (cuInit) logs here; it must never fail a command
                module.config.list_physical_devices()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowFinder:
    """A one-shot import hook for ``tensorflow``: its loader is wrapped in :class:`_QuietLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec
