"""Notebooks (a package only so that notebooks/conftest.py does not shadow tests/conftest.py)."""
