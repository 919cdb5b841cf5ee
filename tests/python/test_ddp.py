"""DDP on distx trains exactly like DDP on Gloo, and the package registers "distx".

Each world builds two identical DDP replicas of a small model per rank, one
over the default distx group and one over a Gloo group of the same ranks, feeds
both the same rank-dependent batches for a few SGD steps, and compares their
parameters (and buffers) at the end. Ranks start from different weights, so the
construction-time broadcast matters; a tiny bucket cap puts every parameter in
its own bucket, so several all_reduces are in flight per step.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from distx_testing import run_ranks

STEPS = 5


class _Net(nn.Module):
    """An MLP with an optional branch (for find_unused_parameters) and BatchNorm (buffers)."""

    def __init__(self, batchnorm: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.bn = nn.BatchNorm1d(32) if batchnorm else nn.Identity()
        self.fc2 = nn.Linear(32, 5)
        self.side = nn.Linear(32, 5)  # used only on even steps when skip_side is set

    def forward(self, x: torch.Tensor, use_side: bool = True) -> torch.Tensor:
        h = torch.relu(self.bn(self.fc1(x)))
        out = self.fc2(h)
        return out + self.side(h) if use_side else out


CONFIGS = {
    "plain": dict(),
    "many-buckets": dict(bucket_cap_mb=0.0005),
    "grad-as-bucket-view": dict(gradient_as_bucket_view=True, bucket_cap_mb=0.001),
    "find-unused-parameters": dict(find_unused_parameters=True, skip_side=True),
    "buffers": dict(batchnorm=True, broadcast_buffers=True),
    "fp16-compress-hook": dict(hook="fp16"),
    "static-graph": dict(static_graph=True),
    "no-sync-accumulation": dict(accumulate=2),
    "join-uneven-inputs": dict(uneven=True),
}


def _train(rank: int, ws: int, group, cfg: dict) -> nn.Module:
    cfg = dict(cfg)
    batchnorm = cfg.pop("batchnorm", False)
    skip_side = cfg.pop("skip_side", False)
    hook = cfg.pop("hook", None)
    accumulate = cfg.pop("accumulate", 1)  # micro-batches per step; all but the last under no_sync()
    uneven = cfg.pop("uneven", False)  # rank r has STEPS + r batches; DDP's Join shadows the rest
    torch.manual_seed(1234 + rank)  # ranks start apart: DDP's constructor must broadcast rank 0's weights
    model = _Net(batchnorm)
    ddp = nn.parallel.DistributedDataParallel(model, process_group=group, **cfg)
    if hook == "fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(group, default_hooks.fp16_compress_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(99 + rank)
    with ddp.join(enable=uneven):
        for step in range(STEPS + (rank if uneven else 0)):
            for micro in range(accumulate):
                x, y = torch.randn(16, 12, generator=data), torch.randn(16, 5, generator=data)
                with ddp.no_sync() if micro < accumulate - 1 else contextlib.nullcontext():
                    out = ddp(x, use_side=not (skip_side and step % 2 == 1))
                    nn.functional.mse_loss(out, y).backward()
            opt.step()
            opt.zero_grad()
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _ddp_worker(rank: int, ws: int, configs: list[str]) -> dict:
    gloo = dist.new_group(backend="gloo")
    out = {}
    for name in configs:
        out[name] = {"distx": _state(_train(rank, ws, None, CONFIGS[name])),
                     "gloo": _state(_train(rank, ws, gloo, CONFIGS[name]))}
    return out


_WORLDS: dict = {}


def _world(ws: int) -> list[dict]:
    if ws not in _WORLDS:
        try:
            _WORLDS[ws] = run_ranks(_ddp_worker, ws, list(CONFIGS), timeout=150, pg_timeout=60)
        except AssertionError as e:
            _WORLDS[ws] = e
    if isinstance(_WORLDS[ws], AssertionError):
        pytest.fail(f"the {ws}-rank DDP world failed:\n{_WORLDS[ws]}", pytrace=False)
    return _WORLDS[ws]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("ws", [2, 3])
def test_ddp_matches_gloo(ws: int, name: str) -> None:
    per_rank = _world(ws)
    # fp16 gradients: both backends sum the same fp16 values, in different orders.
    tol = dict(rtol=1e-3, atol=1e-4) if name == "fp16-compress-hook" else dict(rtol=1e-5, atol=1e-6)
    for rank, out in enumerate(per_rank):
        got, want = out[name]["distx"], out[name]["gloo"]
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], **tol,
                                       msg=lambda m, key=key, rank=rank: f"rank {rank} {key}: {m}")
    # parameters are identical on every rank (buffers need not be: BatchNorm updates them locally)
    ref = per_rank[0][name]["distx"]
    for rank, out in enumerate(per_rank[1:], start=1):
        for key, value in out[name]["distx"].items():
            if "running" not in key and "num_batches" not in key:
                torch.testing.assert_close(value, ref[key], rtol=1e-6, atol=1e-7,
                                           msg=lambda m, key=key, rank=rank: f"rank {rank} vs 0, {key}: {m}")


def _powersgd_worker(rank: int, ws: int, backend: str) -> list[float]:
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd

    group = None if backend == "distx" else dist.new_group(backend="gloo")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    ddp = nn.parallel.DistributedDataParallel(model, process_group=group)
    state = powersgd.PowerSGDState(process_group=group, matrix_approximation_rank=1, start_powerSGD_iter=2,
                                   min_compression_rate=0.5)
    ddp.register_comm_hook(state, powersgd.powerSGD_hook)
    if rank == 1:  # rank 1 runs late, so rank 0's hook chains its callbacks onto pending Works
        model.register_forward_pre_hook(lambda module, inputs: time.sleep(0.05))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(rank)
    for _ in range(4):
        ddp(torch.randn(8, 32, generator=data)).sum().backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().sum().item() for p in model.parameters()]


@pytest.mark.timeout(90)
def test_ddp_powersgd_hook_matches_gloo() -> None:
    """PowerSGD's hook waits for a collective inside a Future.then callback.
    Regression test: distx used to deadlock here (callbacks ran on the group's
    only worker thread; fixed in bca9c2d). A callback chained onto an already
    completed Work runs inline and never showed the bug, so rank 1 is slowed
    down to make rank 0 chain onto pending Works."""
    want = run_ranks(_powersgd_worker, 2, "gloo", timeout=30)
    got = run_ranks(_powersgd_worker, 2, "distx", timeout=15, pg_timeout=4, grace=2)
    for rank, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-5), f"rank {rank}: distx {g} != gloo {w}"


# ------------------------------------------------------------- registration

_PROBE = r"""
import json, torch.distributed as dist
before = hasattr(dist.Backend, "DISTX")
import torch_distx
print(json.dumps({
    "before": before,
    "attr": getattr(dist.Backend, "DISTX", None),
    "parsed": dist.Backend("distx"),
    "capability": dist.Backend.backend_capability.get("distx"),
    "available": dist.is_backend_available("distx"),
    "version": torch_distx.__version__,
}))
"""


def test_import_registers_distx_for_cpu_and_cuda() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["attr"] == "distx" and info["parsed"] == "distx", info
    assert sorted(info["capability"]) == ["cpu", "cuda"], info
    assert info["available"] is True, info


def test_entry_point_is_published() -> None:
    eps = [ep for ep in importlib.metadata.entry_points(group="torch.distributed.backends") if ep.name == "distx"]
    assert len(eps) == 1, f"distx entry points: {eps}"
    assert eps[0].value == "torch_distx._register:register"
    assert eps[0].dist is not None and eps[0].dist.metadata["Name"] == "torch-distx"
    register = eps[0].load()
    register()  # what torch >= 2.14 calls; must be safe after `import torch_distx` too
    register()
    assert dist.Backend.backend_capability["distx"] == ["cpu", "cuda"]
