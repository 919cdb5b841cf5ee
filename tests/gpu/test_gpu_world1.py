"""CUDA tensors on backend="distx" at world size 1 (one GPU holds one NCCL
rank): every collective against torch's own "nccl" backend on the same
inputs (exact), device dispatch and its errors, and the stream semantics of
Note [CUDA Work] (a kernel queued on the caller's stream before the call is
seen; wait() and the Future order later work after it)."""

from __future__ import annotations

import pytest

from distx_testing import run_ranks

FLOAT_DTYPES = ["float32", "float16", "bfloat16", "float64"]
INT_DTYPES = ["int32", "int64", "uint8", "int8"]


def _inputs(dtype_name: str, n: int = 1000):
    import torch

    dt = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(n)
    if dt.is_floating_point:
        x = torch.randn(n, generator=g).to(dt)
    else:
        x = torch.randint(0, 100, (n,), generator=g).to(dt)
    return x.cuda()


def _every_collective_vs_nccl(rank: int, world_size: int) -> list[str]:
    """Runs each case on the distx group and on a torch "nccl" group with the
    same input; returns the names of the cases whose outputs differ."""
    import torch
    import torch.distributed as dist

    nccl = dist.new_group(backend="nccl")
    distx = dist.group.WORLD
    bad: list[str] = []

    def same(name, fn):
        outs = []
        for group in (distx, nccl):
            outs.append(fn(group))
        torch.cuda.synchronize()
        a, b = outs
        a = a if isinstance(a, (list, tuple)) else [a]
        b = b if isinstance(b, (list, tuple)) else [b]
        if len(a) != len(b) or not all(torch.equal(x, y) for x, y in zip(a, b)):
            bad.append(name)

    R = dist.ReduceOp
    for dtn in FLOAT_DTYPES + INT_DTYPES:
        ops = [R.SUM, R.MIN, R.MAX, R.PRODUCT] + ([R.AVG] if "float" in dtn else [])
        for op in ops:
            def ar(g, dtn=dtn, op=op):
                t = _inputs(dtn)
                dist.all_reduce(t, op=op, group=g)
                return t
            same(f"all_reduce {dtn} {op}", ar)
    premul = dist._make_nccl_premul_sum(2.5)

    def ar_premul(g):
        t = _inputs("float32")
        dist.all_reduce(t, op=premul, group=g)
        return t
    same("all_reduce premul_sum", ar_premul)

    def ar_bool(g):
        t = _inputs("uint8") > 50
        dist.all_reduce(t, op=R.SUM, group=g)
        return t
    same("all_reduce bool", ar_bool)

    def ar_complex(g):
        t = torch.randn(64, dtype=torch.complex64, generator=torch.Generator().manual_seed(1)).cuda()
        dist.all_reduce(t, group=g)
        return t
    same("all_reduce complex64", ar_complex)

    def ar_strided(g):
        t = _inputs("float32").view(100, 10).t()  # not contiguous
        dist.all_reduce(t, op=R.AVG, group=g)
        return t
    same("all_reduce non-contiguous", ar_strided)

    def bc(g):
        t = _inputs("float16")
        dist.broadcast(t, src=0, group=g)
        return t
    same("broadcast", bc)

    def red(g):
        t = _inputs("int64")
        dist.reduce(t, dst=0, op=R.MAX, group=g)
        return t
    same("reduce", red)

    def ag(g):
        x = _inputs("bfloat16")
        outs = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(outs, x, group=g)
        return outs
    same("all_gather", ag)

    def ag_t(g):
        x = _inputs("float32")
        out = torch.empty(world_size * x.numel(), device="cuda")
        dist.all_gather_into_tensor(out, x, group=g)
        return out
    same("all_gather_into_tensor", ag_t)

    def rs(g):
        ins = [_inputs("float32") for _ in range(world_size)]
        out = torch.empty_like(ins[0])
        dist.reduce_scatter(out, ins, group=g)
        return out
    same("reduce_scatter", rs)

    def rs_t(g):
        x = _inputs("float32")
        out = torch.empty(x.numel() // world_size, device="cuda")
        dist.reduce_scatter_tensor(out, x, op=R.AVG, group=g)
        return out
    same("reduce_scatter_tensor", rs_t)

    def gather(g):
        x = _inputs("int32")
        outs = [torch.empty_like(x) for _ in range(world_size)]
        dist.gather(x, outs, dst=0, group=g)
        return outs
    same("gather", gather)

    def scatter(g):
        ins = [_inputs("int32") for _ in range(world_size)]
        out = torch.empty_like(ins[0])
        dist.scatter(out, ins, src=0, group=g)
        return out
    same("scatter", scatter)

    def a2a_single(g):
        x = _inputs("float32")
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=g)
        return out
    same("all_to_all_single", a2a_single)

    def a2a(g):
        ins = [_inputs("float32") for _ in range(world_size)]
        outs = [torch.empty_like(t) for t in ins]
        dist.all_to_all(outs, ins, group=g)
        return outs
    same("all_to_all", a2a)

    def ag_obj(g):
        out = [None] * world_size
        dist.all_gather_object(out, {"rank": rank}, group=g)
        return [torch.tensor([o["rank"] for o in out])]
    same("all_gather_object", ag_obj)

    # Coalesced forms (FSDP2 issues these) through the ProcessGroup directly.
    backend = distx
    xs = [_inputs("float32", 64), _inputs("float32", 32)]
    outs = [torch.empty(world_size * x.numel(), device="cuda") for x in xs]
    backend.allgather_into_tensor_coalesced(outs, xs).wait()
    torch.cuda.synchronize()
    if not all(torch.equal(o, x.repeat(world_size)) for o, x in zip(outs, xs)):
        bad.append("allgather_into_tensor_coalesced")
    rs_outs = [torch.empty(x.numel() // world_size, device="cuda") for x in xs]
    backend.reduce_scatter_tensor_coalesced(rs_outs, xs).wait()
    torch.cuda.synchronize()
    if not all(torch.equal(o, x * world_size) for o, x in zip(rs_outs, xs)):
        bad.append("reduce_scatter_tensor_coalesced")
    return bad


def test_every_collective_matches_nccl():
    bad = run_ranks(_every_collective_vs_nccl, 1, timeout=600)[0]
    assert bad == []


def _dispatch_and_errors(rank: int, world_size: int) -> dict:
    import torch
    import torch.distributed as dist

    out: dict = {}
    # One group, both devices: CPU tensors still take the UCX path.
    c = torch.ones(8)
    dist.all_reduce(c)
    out["cpu"] = c.tolist()
    g = torch.ones(8, device="cuda")
    dist.all_reduce(g)
    out["cuda"] = g.cpu().tolist()
    for name, call in {
        "mixed": lambda: dist.all_gather([torch.empty(4)], torch.ones(4, device="cuda")),
        "band": lambda: dist.all_reduce(torch.ones(4, dtype=torch.int32, device="cuda"),
                                        op=dist.ReduceOp.BAND),
    }.items():
        try:
            call()
            out[name] = "no error"
        except Exception as e:  # noqa: BLE001 - the type is what is checked
            out[name] = f"{type(e).__name__}: {e}"
    return out


def test_dispatch_both_devices_and_typed_errors():
    res = run_ranks(_dispatch_and_errors, 1, timeout=300)[0]
    assert res["cpu"] == [1.0] * 8
    assert res["cuda"] == [1.0] * 8
    assert res["mixed"].startswith("ValueError") and "all on the CPU or all on CUDA" in res["mixed"]
    assert res["band"].startswith("TypeError") and "NCCL" in res["band"]


def _stream_semantics(rank: int, world_size: int) -> dict:
    import torch
    import torch.distributed as dist

    res = {}
    side = torch.cuda.Stream()
    t = torch.zeros(1 << 20, device="cuda")
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s: the fill below lands late
        t.fill_(3.0)
        # PREMUL_SUM scales on the internal stream: without the ready event it
        # would scale the zeros and the result would be 0, not 6.
        work = dist.all_reduce(t, op=dist._make_nccl_premul_sum(2.0), async_op=True)
        work.wait()  # makes `side` wait for the collective
        after = t * 1  # queued on `side` after wait()
        fut = work.get_future().then(lambda f: f.value()[0] + 1)
        chained = fut.wait()
    side.synchronize()
    res["seen"] = after.unique().tolist()
    res["chained"] = chained.unique().tolist()
    res["completed"] = work.is_completed()
    # all_gather copies on the internal stream: it must see a late fill too.
    x = torch.zeros(1 << 20, device="cuda")
    outs = [torch.empty_like(x) for _ in range(world_size)]
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)
        x.fill_(5.0)
        dist.all_gather(outs, x)
        gathered = outs[0] * 1
    side.synchronize()
    res["gathered"] = gathered.unique().tolist()
    return res


def test_stream_semantics():
    res = run_ranks(_stream_semantics, 1, timeout=300)[0]
    assert res["seen"] == [6.0]
    assert res["chained"] == [7.0]
    assert res["completed"]
    assert res["gathered"] == [5.0]


def _ddp_step(rank: int, world_size: int) -> list:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).cuda()
    ref = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).cuda()
    ref.load_state_dict(model.state_dict())
    ddp = DDP(model, device_ids=[0], bucket_cap_mb=0.001)  # several buckets
    x = torch.randn(16, 32, device="cuda")
    ddp(x).square().sum().backward()
    ref(x).square().sum().backward()
    return [float((p.grad - q.grad).abs().max()) for p, q in zip(model.parameters(), ref.parameters())]


def test_ddp_step_world1():
    diffs = run_ranks(_ddp_step, 1, timeout=300)[0]
    assert max(diffs) == 0.0


def _nccl_version(rank: int, world_size: int) -> tuple:
    import torch
    import torch.distributed as dist
    import torch_distx

    t = torch.ones(1, device="cuda")
    dist.all_reduce(t)  # loads NCCL
    return (torch_distx._C.nccl_version(), torch_distx._C.nccl_library(), torch.cuda.nccl.version())


@pytest.mark.parametrize("unused", [None])
def test_nccl_is_the_wheel_torch_uses(unused):
    ours, path, theirs = run_ranks(_nccl_version, 1, timeout=300)[0]
    assert "nvidia/nccl/lib/libnccl.so" in path
    major, minor, patch = theirs[:3]
    assert ours == major * 10000 + minor * 100 + patch
