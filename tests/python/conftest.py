"""pytest set-up shared by tests/python.

Multi-process helpers live in distx_testing.py (run_ranks, run_ranks_raw,
free_port); this file makes that module importable from every test file, in
the parent and in the spawned ranks, whatever pytest's import mode.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
# Children started by multiprocessing "spawn" receive this sys.path, so they
# can unpickle worker functions defined in test modules.


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "distx_bug: reproduces a known torch-distx backend bug; fails until the backend is fixed",
    )
