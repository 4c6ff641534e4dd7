"""kseg's one exception type, the command-line error convention, and safe writing.

Every failure a user can cause (a missing file, a bad option, a malformed label
matrix) raises :class:`KsegError` with the file and the problem in its message.
Command-line tools wrap their ``main`` in :func:`cli_entry`, which prints
``kseg: error: <message>`` on one line and exits with status 2 (``--debug``
shows the traceback instead). An ``OSError`` that the disk or the file system
raised (full disk, read-only, permission denied) is reported the same way.

Files that a later run trusts (checkpoints, the resume state, histories,
caches, exports) are written under a temporary name beside the target and
renamed into place (:func:`atomic_path`), so a kill at any moment leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from pathlib import Path

# errors of the disk or the file system, not of kseg: reported in one line, no traceback
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


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
        except OSError as err:
            if debug or err.errno not in DISK_ERRNOS:
                raise
            where = f"{err.filename}: " if err.filename else ""
            print(f"kseg: error: {where}{err.strerror or err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("kseg: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def temp_name(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path`` that keeps its suffixes (``.keras``, ``.weights.h5``, ``.png``)."""
    path = Path(path)
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "file"):
    """Yield a temporary path to write; on success rename it to ``path``.

    A kill leaves ``path`` as it was (the temporary file is ignored by every
    reader); an ``OSError`` while writing (a full disk, say) removes the
    temporary file, leaves ``path`` as it was and raises :class:`KsegError`
    naming ``path``.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        if tmp.is_file():  # on the disk before the rename: a crash then leaves the old file or the new one
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        raise KsegError(f"{path}: cannot write the {what} ({err.strerror or err}); "
                        f"the previous {path.name}, if any, is unchanged") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
