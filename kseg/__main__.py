"""``python -m kseg``: the ``kseg`` command (see :mod:`kseg.cli`)."""

import sys

from kseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
