"""Two ranks on one GPU that claim different hosts (DISTX_HOSTID), so distx
runs its multi-host CUDA path (Note [Multi-host CUDA]): NCCL inside each
"host" (a communicator of one rank), the inter-node stage over UCX carrying
the GPU data, and the other collectives staged through host memory. Checked
against closed forms; DDP steps with each compression switch against a
single-process reference; a rank that never joins makes the other fail with
an error naming the op and its sequence number."""

from __future__ import annotations

import datetime

import pytest

from distx_testing import current_store, run_ranks, run_ranks_raw


def _init(rank: int, world_size: int, timeout_s: float = 60.0) -> None:
    import os

    import torch
    import torch.distributed as dist

    os.environ["DISTX_HOSTID"] = f"gpuhost{rank}"
    torch.cuda.set_device(0)
    import torch_distx  # noqa: F401

    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def _collectives(rank: int, world_size: int) -> dict:
    import torch
    import torch.distributed as dist

    _init(rank, world_size)
    res: dict = {}
    n = (1 << 20) + 3  # not a multiple of anything
    base = torch.arange(n, dtype=torch.float32, device="cuda")
    t = base + rank
    dist.all_reduce(t)
    res["all_reduce_sum"] = torch.equal(t, 2 * base + 1)
    t = torch.full((17,), float(rank + 1), device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    res["all_reduce_avg"] = t.unique().tolist()
    t = torch.tensor([rank, 10 - rank], dtype=torch.int64, device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    res["all_reduce_max"] = t.tolist()
    t = torch.full((5,), float(rank), dtype=torch.bfloat16, device="cuda")
    dist.broadcast(t, src=1)
    res["broadcast"] = t.float().unique().tolist()
    outs = [torch.empty(3, device="cuda") for _ in range(world_size)]
    dist.all_gather(outs, torch.full((3,), float(rank), device="cuda"))
    res["all_gather"] = [o.unique().tolist() for o in outs]
    out = torch.empty(4, device="cuda")
    dist.reduce_scatter_tensor(out, torch.arange(8, dtype=torch.float32, device="cuda") * (rank + 1))
    res["reduce_scatter_tensor"] = out.tolist()
    x = torch.arange(4, dtype=torch.float32, device="cuda") + 10 * rank
    y = torch.empty_like(x)
    dist.all_to_all_single(y, x)
    res["all_to_all_single"] = y.tolist()
    if rank == 0:
        dist.send(torch.full((6,), 42.0, device="cuda"), dst=1)
    else:
        r = torch.empty(6, device="cuda")
        dist.recv(r, src=0)
        res["recv"] = r.unique().tolist()
    torch.cuda.synchronize()
    return res


def test_two_hosts_collectives():
    r0, r1 = run_ranks(_collectives, 2, backend=None, timeout=300)
    for r in (r0, r1):
        assert r["all_reduce_sum"]
        assert r["all_reduce_avg"] == [1.5]
        assert r["all_reduce_max"] == [1, 10]
        assert r["broadcast"] == [1.0]
        assert r["all_gather"] == [[0.0], [1.0]]
    assert r0["reduce_scatter_tensor"] == [0.0, 3.0, 6.0, 9.0]
    assert r1["reduce_scatter_tensor"] == [12.0, 15.0, 18.0, 21.0]
    assert r0["all_to_all_single"] == [0.0, 1.0, 10.0, 11.0]
    assert r1["all_to_all_single"] == [2.0, 3.0, 12.0, 13.0]
    assert r1["recv"] == [42.0]


def _ddp(rank: int, world_size: int, steps: int) -> dict:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    _init(rank, world_size)

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8)).cuda()

    model, ref = net(), net()
    ddp = DDP(model, device_ids=[0], bucket_cap_mb=0.05)  # several buckets, all above min_bytes
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(7)
    for _ in range(steps):
        xs = [torch.randn(32, 64, generator=g).cuda() for _ in range(world_size)]
        opt.zero_grad()
        ddp(xs[rank]).square().mean().backward()
        opt.step()
        ref_opt.zero_grad()  # the reference sees both ranks' batches: mean of the two losses
        (sum(ref(x).square().mean() for x in xs) / world_size).backward()
        ref_opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    flat_ref = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])
    import torch_distx

    return {"params": flat.cpu(), "max_diff": float((flat - flat_ref).abs().max()),
            "scale": float(flat_ref.abs().max()), "stats": torch_distx.compression_stats()}


@pytest.mark.parametrize("rail", ["auto", "0"])
@pytest.mark.parametrize("compress,tol", [
    ("", 1e-5),
    ("fp16", 2e-3),
    ("bf16", 2e-2),
    ("topk:0.3", None),
])
def test_ddp_two_hosts(compress, tol, rail):
    """Each compression switch value (Note [GPU compression]), with the rail
    direct where UCX takes CUDA memory (auto) and always staged (0)."""
    env = {"DISTX_UCX_CUDA": rail}
    if compress:
        env |= {"DISTX_COMPRESS": compress, "DISTX_COMPRESS_MIN_BYTES": "1024"}
    r0, r1 = run_ranks(_ddp, 2, 3, backend=None, env=env, timeout=300)
    # Replicas stay bit-identical whatever the codec.
    assert r0["params"].equal(r1["params"])
    calls = r0["stats"]["calls"]
    assert (calls > 0) if compress else (calls == 0), r0["stats"]
    if tol is not None:
        assert r0["max_diff"] <= tol * max(1.0, r0["scale"])


def _silent_peer(rank: int, world_size: int) -> str:
    import torch
    import torch.distributed as dist

    _init(rank, world_size, timeout_s=3.0)
    t = torch.ones(1000, device="cuda")
    dist.all_reduce(t)  # seq 1: both join
    if rank == 1:
        import time

        time.sleep(8)  # never joins seq 2
        return "slept"
    try:
        dist.all_reduce(t)
        torch.cuda.synchronize()
        return "no error"
    except Exception as e:  # noqa: BLE001 - the type is checked
        return f"{type(e).__name__}: {e}"


def test_silent_peer_times_out_naming_op_and_seq():
    res = run_ranks_raw(_silent_peer, 2, backend=None, timeout=120)
    msg = res[0].value
    assert msg.startswith("DistBackendError"), msg
    assert "all_reduce" in msg and "seq" in msg, msg
