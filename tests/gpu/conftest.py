"""pytest set-up for tests/gpu (``make test-gpu``).

Every test here needs a CUDA device and a torch_distx built against a CUDA
build of torch. Where either is missing, each test is still collected and
reported as skipped with the reason (never "no tests ran"), so a CPU-only CI
run shows exactly what was not exercised.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PY_TESTS = os.path.join(os.path.dirname(HERE), "python")
for path in (HERE, PY_TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)  # distx_testing (run_ranks) and gpu_testing


def _why_no_gpu() -> str:
    """Empty when the GPU tests can run, else the reason they cannot. Reads
    the device count without initialising CUDA in this process (the ranks
    are forked from a server that must not inherit a CUDA context)."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build (no CUDA)"
    try:
        import torch_distx
    except ImportError as e:  # pragma: no cover - the build is broken
        return f"torch_distx does not import: {e}"
    if not torch_distx._C.with_cuda:
        return "torch_distx was built without CUDA (DISTX_WITH_CUDA=0 or a CPU torch at build time)"
    if torch.cuda.device_count() < 1:
        return "no CUDA device is visible (torch.cuda.device_count() == 0)"
    return ""


def pytest_collection_modifyitems(config, items):
    reason = _why_no_gpu()
    if not reason:
        return
    skip = pytest.mark.skip(reason=f"GPU test skipped: {reason}")
    for item in items:
        item.add_marker(skip)
