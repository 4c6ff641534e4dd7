"""ruff (pyflakes' rules and syntax errors) over the package, the tests and the benches: an unused import, an
undefined name or a redefinition fails the suite, as CI runs it (ruff comes with the test extra)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_ruff_finds_nothing():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--output-format", "concise",
                          "kseg", "tests", "bench", "notebooks/build_notebooks.py"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
