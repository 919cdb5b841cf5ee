"""The group compression switch on CUDA tensors (Note [GPU compression]): two
ranks on one GPU that claim different hosts (DISTX_HOSTID), so the inter-node
stage of the hierarchical all-reduce runs the CUDA codecs on the GPU shard.
Results are checked exactly against closed forms computed on the CPU with
torch's own rounding: fp16/bf16 cast each rank's input, sum in float32 in rank
order, round the sum once; top-k keeps each rank's k largest magnitudes and
sums them, with the error-feedback residual carried to the next step. Both
rail modes: direct where UCX takes CUDA memory (auto) and staged (0); and
DISTX_UCX_CUDA=1 on a UCX without CUDA support is an error naming it."""

from __future__ import annotations

import datetime

import pytest

from distx_testing import current_store, run_ranks, run_ranks_raw

N = 50_003  # not a multiple of anything


def _init(rank: int, world_size: int) -> None:
    import os

    import torch
    import torch.distributed as dist

    os.environ["DISTX_HOSTID"] = f"gpuhost{rank}"
    torch.cuda.set_device(0)
    import torch_distx  # noqa: F401

    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))


def _input(rank: int, step: int):
    import torch

    g = torch.Generator().manual_seed(100 * rank + step)
    # Continuous values: no top-k ties; well inside the fp16 range.
    return torch.randn(N, generator=g)


def _all_reduce_steps(rank: int, world_size: int, steps: int, op: str) -> dict:
    import torch
    import torch.distributed as dist

    import torch_distx

    _init(rank, world_size)
    outs = []
    t = torch.empty(N, device="cuda")  # one buffer: one bucket identity for the residual
    for step in range(steps):
        t.copy_(_input(rank, step))
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        outs.append(t.cpu())
    torch.cuda.synchronize()
    return {"outs": outs, "stats": torch_distx.compression_stats()}


def _expected_cast(kind: str, steps: int, world_size: int, op: str):
    import torch

    dt = torch.float16 if kind == "fp16" else torch.bfloat16
    res = []
    for step in range(steps):
        acc = torch.zeros(N)
        for r in range(world_size):
            acc = acc + _input(r, step).to(dt).float()
        res.append(acc.to(dt).float() / (world_size if op == "AVG" else 1))
    return res


def _expected_topk(ratio: float, steps: int, world_size: int, op: str):
    import torch

    k = int(ratio * N + 0.5)
    residual = [torch.zeros(N) for _ in range(world_size)]
    res = []
    for step in range(steps):
        total = torch.zeros(N)
        for r in range(world_size):
            a = _input(r, step) + residual[r]
            idx = a.abs().topk(k).indices
            sent = torch.zeros(N)
            sent[idx] = a[idx]
            residual[r] = a - sent
            total = total + sent
        res.append(total / (world_size if op == "AVG" else 1))
    return res


@pytest.mark.parametrize("rail", ["auto", "0"])
@pytest.mark.parametrize("op", ["SUM", "AVG"])
@pytest.mark.parametrize("compress", ["fp16", "bf16", "topk:0.01"])
def test_compressed_rail_matches_closed_form(compress, op, rail):
    import torch

    steps = 3
    env = {"DISTX_COMPRESS": compress, "DISTX_COMPRESS_MIN_BYTES": "1024", "DISTX_UCX_CUDA": rail}
    r0, r1 = run_ranks(_all_reduce_steps, 2, steps, op, backend=None, env=env, timeout=300)
    if compress.startswith("topk"):
        want = _expected_topk(float(compress.split(":")[1]), steps, 2, op)
    else:
        want = _expected_cast(compress, steps, 2, op)
    for step in range(steps):
        # Bit-identical replicas; values as the closed form (AVG divides once
        # at the end, in float32, on the GPU: allow one rounding).
        assert torch.equal(r0["outs"][step], r1["outs"][step])
        tol = 0.0 if op == "SUM" else 1e-6
        torch.testing.assert_close(r0["outs"][step], want[step], rtol=tol, atol=tol)
    stats = r0["stats"]
    assert stats["calls"] == steps and stats["fallbacks"]["density"] == 0, stats
    assert stats["bytes_after"] < stats["bytes_before"], stats


def _overflow(rank: int, world_size: int) -> dict:
    import torch
    import torch.distributed as dist

    import torch_distx

    _init(rank, world_size)
    t = torch.full((4096,), 60000.0, device="cuda")  # the fp16 sum overflows: redone dense
    dist.all_reduce(t)
    return {"out": t.cpu(), "stats": torch_distx.compression_stats()}


def test_fp16_rail_overflow_falls_back_to_dense():
    import torch

    env = {"DISTX_COMPRESS": "fp16", "DISTX_COMPRESS_MIN_BYTES": "1024"}
    r0, r1 = run_ranks(_overflow, 2, backend=None, env=env, timeout=300)
    assert torch.equal(r0["out"], torch.full((4096,), 120000.0))
    assert torch.equal(r0["out"], r1["out"])
    assert r0["stats"]["fallbacks"]["non_finite"] == 1, r0["stats"]


def _forced_direct(rank: int, world_size: int) -> str:
    import torch
    import torch.distributed as dist

    _init(rank, world_size)
    t = torch.ones(1 << 16, device="cuda")
    try:
        dist.all_reduce(t)
        torch.cuda.synchronize()
        return f"ok {t[0].item()}"
    except Exception as e:  # noqa: BLE001 - the message is checked
        return f"{type(e).__name__}: {e}"


def test_ucx_cuda_required():
    import torch_distx

    res = run_ranks_raw(_forced_direct, 2, backend=None, env={"DISTX_UCX_CUDA": "1"}, timeout=120)
    for r in res:
        if torch_distx._C.ucx_cuda_memory():
            assert r.value == "ok 2.0", r
        else:
            assert "DISTX_UCX_CUDA=1" in str(r.value), r
