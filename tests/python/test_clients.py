"""Real training libraries on distx, each through its example (2 processes
under torchrun, weights checked against a one-process replay inside the
example): Lightning's DDPStrategy(process_group_backend="distx") and Hugging
Face Accelerate with the group created before the Accelerator. FSDP2 has its
own file (test_fsdp2.py). The libraries come from `make clients` (lightning,
accelerate, pinned to the venv's torch); without them these tests skip."""

from __future__ import annotations

import importlib.util
import os

import pytest

from test_torchrun import REPO, _torchrun

_MISSING = "not installed in this venv ({}): `make clients` installs lightning and accelerate with torch pinned"


def _run_example(module: str, example: str) -> str:
    """The output of examples/<example> under torchrun (2 ranks), which must
    exit 0; skips when `module` is not installed."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(_MISSING.format(module))
    rc, out = _torchrun([os.path.join(REPO, "examples", example)], timeout=220, cwd=REPO)
    assert rc == 0, out
    return out


@pytest.mark.timeout(240)
def test_lightning_ddp_strategy_on_distx() -> None:
    out = _run_example("lightning", "lightning_ddp.py")
    for rank in (0, 1):
        assert f"rank {rank}: lightning DDP on distx: weights match the replay: OK" in out, out


@pytest.mark.timeout(240)
def test_accelerate_with_distx_group_created_first() -> None:
    out = _run_example("accelerate", "accelerate_ddp.py")
    for rank in (0, 1):
        assert f"rank {rank}: accelerate (" in out and "on distx: weights match the replay: OK" in out, out
    assert out.count("weights match the replay: OK") == 2, out
