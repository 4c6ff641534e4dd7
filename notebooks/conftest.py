"""Run the notebooks at a tiny budget under pytest (nbmake), unless KSEG_NOTEBOOK_BUDGET says otherwise.

pytest loads this file before nbmake starts each notebook's kernel, which inherits the environment.
"""

import os

os.environ.setdefault("KSEG_NOTEBOOK_BUDGET", "tiny")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
