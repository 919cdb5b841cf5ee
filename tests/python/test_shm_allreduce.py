"""The one-host all-reduce through shared staging (Note [Shared staging]).

Every all_reduce among ranks of one host takes this path, so the whole
collective suite exercises it; this file adds what is particular to it:
tensors that span many blocks and end mid-block, against gloo on the same
inputs, with identical bytes on every rank; mismatched calls without
DISTX_DEBUG raise (DistBackendError naming both sides) instead of mixing
blocks, and the group goes on; nothing is left in /dev/shm; and a /dev/shm
too small for the segments (a private tmpfs of 64 KiB in a mount namespace)
falls back to the ring on every rank with one warning, still exact.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from distx_testing import free_port, run_ranks, run_ranks_raw

# 256 KiB slots (SharedStaging::kDefaultSlotBytes): a block is P x 256 KiB.
COUNTS = (1, 3, 65536 + 1, 3 * 65536 * 4 + 5, (1 << 22) + 3)


def _inputs(rank: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(7919 * rank + n)
    x = torch.rand(n, generator=g) * 8 - 4
    return x.to(dtype) if dtype.is_floating_point else (x * 1000).to(dtype)


def _against_gloo(rank: int, ws: int) -> list[str]:
    gloo = dist.new_group(backend="gloo")
    bad = []
    cases = [(torch.float32, "SUM"), (torch.float32, "AVG"), (torch.bfloat16, "SUM"),
             (torch.float16, "MAX"), (torch.float64, "PRODUCT"), (torch.int64, "SUM"),
             (torch.int32, "MIN")]
    for dtype, opname in cases:
        op = getattr(dist.ReduceOp, opname)
        for n in COUNTS:
            x = _inputs(rank, n, dtype)
            if opname == "PRODUCT":
                x = x / 8 + 1
            got, want = x.clone(), x.clone()
            dist.all_reduce(got, op=op)
            if opname == "AVG":
                dist.all_reduce(want, op=dist.ReduceOp.SUM, group=gloo)
                want /= ws
            else:
                dist.all_reduce(want, op=op, group=gloo)
            # Low precision: the summation order differs from gloo's (one
            # rounding per step, a few units in the last place).
            tol = {torch.bfloat16: 3e-2, torch.float16: 0.0}.get(dtype, 1e-5)
            if not torch.allclose(got.double(), want.double(), rtol=tol, atol=tol * 4):
                bad.append(f"{dtype} {opname} n={n}: max diff {(got.double() - want.double()).abs().max()}")
            rank0 = got.clone()
            dist.broadcast(rank0, 0, group=gloo)
            if not torch.equal(rank0, got):
                bad.append(f"{dtype} {opname} n={n}: rank {rank} differs from rank 0")
    return bad


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ws", [2, 3, 4])
def test_many_blocks_match_gloo_and_agree(ws: int) -> None:
    for rank, bad in enumerate(run_ranks(_against_gloo, ws, timeout=240)):
        assert not bad, f"rank {rank}: {bad}"


def _mismatch(rank: int, ws: int) -> dict:
    out = {}
    try:
        dist.all_reduce(torch.ones(1000 if rank == 0 else 1200))
        out["first"] = None
    except Exception as e:  # noqa: BLE001
        out["first"] = f"{type(e).__name__}: {e}"
    t = torch.full((100_000,), float(rank + 1))
    dist.all_reduce(t)
    out["after"] = t[::9973].tolist()
    return out


@pytest.mark.timeout(120)
def test_mismatched_counts_raise_on_every_rank_and_the_group_goes_on() -> None:
    for rank, out in enumerate(run_ranks(_mismatch, 3, timeout=90)):
        assert out["first"] and out["first"].startswith("DistBackendError"), (rank, out)
        assert "mismatch" in out["first"] and "1000" in out["first"] and "1200" in out["first"], out
        assert set(out["after"]) == {6.0}, (rank, out)


def _pid_and_reduce(rank: int, ws: int) -> int:
    t = torch.ones(1 << 20)
    dist.all_reduce(t)
    sub = dist.new_group(backend="distx")
    dist.all_reduce(t, group=sub)
    assert t[0].item() == ws * ws
    return os.getpid()


@pytest.mark.timeout(120)
def test_no_segment_is_left_in_dev_shm() -> None:
    pids = run_ranks(_pid_and_reduce, 2, timeout=90)
    left = [p for pid in pids for p in glob.glob(f"/dev/shm/distx-{pid}-*")]
    assert not left, left


_SMALL_SHM_WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist, torch_distx
    dist.init_process_group("distx")
    r, ws = dist.get_rank(), dist.get_world_size()
    t = torch.arange(300_000, dtype=torch.float32) + r
    dist.all_reduce(t)
    want = torch.arange(300_000, dtype=torch.float64) * ws + sum(range(ws))
    assert torch.equal(t.double(), want), "wrong result"
    dist.destroy_process_group()
    print("RANK_OK", r, flush=True)
""")


@pytest.mark.timeout(180)
def test_dev_shm_too_small_falls_back_to_the_ring(tmp_path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private /dev/shm")
    script = tmp_path / "worker.py"
    script.write_text(_SMALL_SHM_WORKER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", str(free_port()), str(script)]
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           'mount -t tmpfs -o size=64k tmpfs /dev/shm && exec "$@"', "sh", *torchrun]
    env = dict(os.environ, DISTX_LOG_LEVEL="warn", UCX_TLS="tcp,self", UCX_NET_DEVICES="lo",
               OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert text.count("RANK_OK") == 2, text[-4000:]
    assert "shared-memory all-reduce unavailable" in text, text[-4000:]
    assert "/dev/shm" in text, text[-4000:]
