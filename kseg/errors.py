"""kseg's one exception type and the command-line error convention.

Every failure a user can cause (a missing file, a bad option, a malformed label
matrix) raises :class:`KsegError` with the file and the problem in its message.
Command-line tools wrap their ``main`` in :func:`cli_entry`, which prints
``kseg: error: <message>`` on one line and exits with status 2 (``--debug``
shows the traceback instead).
"""

from __future__ import annotations

import functools
import os
import sys


class KsegError(Exception):
    """An error the user can fix: the message names the file and the problem."""


def cli_entry(main):
    """Decorate a CLI ``main(argv)`` so that user errors print one line and exit 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in argv or os.environ.get("KSEG_DEBUG") == "1"
        try:
            return main(argv)
        except KsegError as err:
            if debug:
                raise
            print(f"kseg: error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("kseg: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
