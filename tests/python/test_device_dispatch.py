"""Device dispatch seen from a CPU-only build (Note [Device dispatch]): the
build says whether it has CUDA, and tests/gpu reports every test as skipped
with the reason instead of running nothing. (The GPU side is tests/gpu.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_build_reports_cuda_support():
    import torch_distx

    assert torch_distx._C.with_cuda == (torch.version.cuda is not None and hasattr(torch_distx._C, "nccl_version"))


@pytest.mark.skipif(torch.version.cuda is not None and torch.cuda.device_count() > 0,
                    reason="a GPU is visible: make test-gpu runs the GPU tests for real")
def test_gpu_suite_skips_with_a_reason_without_a_gpu():
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/gpu", "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "no tests ran" not in out, out
    assert " skipped" in out and "GPU test skipped:" in out, out
    assert " passed" not in out and " failed" not in out, out


def test_ucx_cuda_memory_capability_is_reported():
    """Note [CUDA-aware rail]: whether the loaded UCX takes CUDA memory is a
    capability UCX itself reports (ucp_context_query); info prints it. Debian's
    libucx (pkg-config) is built without CUDA, so it must say no."""
    import torch_distx
    from torch_distx import _build_info

    supported = torch_distx._C.ucx_cuda_memory()
    assert isinstance(supported, bool)
    assert supported == torch_distx._C.ucx_cuda_memory()  # cached, stable
    if _build_info.UCX_SOURCE.startswith("pkg-config"):
        assert not supported
    proc = subprocess.run([sys.executable, "-m", "torch_distx.info"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"UCX CUDA memory {'yes' if supported else 'no'}" in proc.stdout, proc.stdout
    assert "DISTX_UCX_CUDA" in proc.stdout, proc.stdout
