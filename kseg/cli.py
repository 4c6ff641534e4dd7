"""The ``kseg`` command: ``kseg train|evaluate|predict|export|import|shapes [options]``.

``kseg CMD ...`` runs the ``main`` of CMD's module with the rest of the command
line (``kseg train --mask surfaces`` is ``python -m kseg.train --mask surfaces``),
so each command takes the options its module documents (``kseg CMD --help``).
A module is imported only when its command runs: ``kseg --help`` and
``kseg --version`` answer without loading TensorFlow, and a command starts
TensorFlow quietly with oneDNN on (:mod:`kseg.startup`, which ``import kseg``
runs first in a command's process). ``python -m kseg`` is the same command. Errors a user can cause print one line ``kseg: error: ...`` and
exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module whose main(argv) runs it, one line for kseg --help)
COMMANDS = {
    "train": ("kseg.train", "train a model on iccv09, your own images and masks, or COCO instances"),
    "evaluate": ("kseg.evaluate", "score a trained model: per-class IoU, confusion matrix, worst images"),
    "predict": ("kseg.predict", "write class maps and overlays for images or folders of images"),
    "export": ("kseg.export", "write a SavedModel, ONNX, OpenVINO or LiteRT model that takes uint8 images of any size"),
    "import": ("kseg.data.annotations", "convert annotations from a labelling tool into images/ + masks/"),
    "shapes": ("kseg.data.shapes", "write a synthetic COCO instance and panoptic dataset of shapes"),
}


def _help() -> str:
    width = max(*map(len, COMMANDS), len("-h, --help"))
    lines = [
        "usage: kseg <command> [options]",
        "       kseg --help | --version",
        "",
        "Semantic segmentation for Keras 3 / TensorFlow.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width}}  show this help and exit",
        f"  {'--version':<{width}}  print kseg's version and exit",
        "",
        "'kseg <command> --help' lists a command's options.",
    ]
    return "\n".join(lines)


def _fail(message: str) -> None:
    print(f"kseg: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None) -> int:
    """Run ``kseg`` with ``argv`` (default ``sys.argv[1:]``); returns the command's exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = ", ".join(COMMANDS)
    if not argv:
        _fail(f"give a command: {names} (kseg --help says what each does)")
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help"):
        print(_help())
        return 0
    if command == "--version":
        from kseg import __version__

        print(f"kseg {__version__}")
        return 0
    if command not in COMMANDS:
        _fail(f"unknown command {command!r}: choose one of {names}")
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
            raise  # a dependency is missing inside the module: not this installation's command list
        _fail(f"'kseg {command}' is not available in this kseg installation (no module {module_name})")
    run = getattr(module, "main", None)
    if run is None:
        _fail(f"'kseg {command}' is not available in this kseg installation ({module_name} has no main)")
    from kseg.commandline import RUNNING_AS

    RUNNING_AS.append(f"kseg {command}")  # the command's usage line names it as typed
    try:
        status = run(rest)
    finally:
        RUNNING_AS.pop()
    return 0 if status is None else status
