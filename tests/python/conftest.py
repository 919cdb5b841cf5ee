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
    config.addinivalue_line(
        "markers", "long: a long run for `make test-long` (skipped unless DISTX_TEST_LONG=1)"
    )


def pytest_collection_modifyitems(config, items):
    # A known, documented backend bug is reported as xfail so the suite stays
    # green while the bug stays visible. Strict: once the bug is fixed the
    # test XPASSes, which fails the run, so the marker cannot outlive the bug
    # (remove the marker with the fix).
    import pytest

    long_ok = os.environ.get("DISTX_TEST_LONG") == "1"
    for item in items:
        if item.get_closest_marker("long") and not long_ok:
            item.add_marker(pytest.mark.skip(reason="long run: `make test-long` (DISTX_TEST_LONG=1)"))
        if item.get_closest_marker("distx_bug"):
            item.add_marker(pytest.mark.xfail(reason="known distx bug (see the test's docstring)", strict=True))
