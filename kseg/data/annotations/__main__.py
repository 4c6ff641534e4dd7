"""``python -m kseg.data.annotations SRC --out DIR ...``."""

import sys

from kseg.data.annotations.cli import main

sys.exit(main())
