"""What kseg's commands share on the command line: their parser (name, help layout, defaults shown).

Each command (``kseg train``, ``evaluate``, ``predict``, ``export``, ``import``) builds its parser with
:func:`command_parser`: its usage line names it as the user ran it (``kseg train`` under the ``kseg``
command, ``python -m kseg.train`` otherwise), descriptions and epilogs keep their line breaks, and every
option's help ends with its default unless the help already says what the default is, or there is none
(``None``, a flag that is off).
"""

from __future__ import annotations

import argparse

# set by the ``kseg`` command (kseg.cli) while it runs one of its commands: the name the user typed
RUNNING_AS: list[str] = []


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; ``(default: X)`` after each option's help where it adds something."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


def command_parser(module: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of the command whose module is ``module`` (``"kseg.train"``)."""
    prog = RUNNING_AS[-1] if RUNNING_AS else f"python -m {module}"
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=HelpFormatter)

