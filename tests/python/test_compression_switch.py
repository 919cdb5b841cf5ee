"""The group compression switch (docs/compression.md, Note [Compression switch]):
with DISTX_COMPRESS on, every call outside the gate is bit-exact against gloo
on the same inputs and leaves the counters alone; gated all-reduces are
compressed, bit-identical on every rank; options beat the environment; bad
values raise ValueError naming the variable; rank 0 logs once."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist

from distx_oracle import check, gloo_reduced, values
from distx_testing import CaseTable, run_ranks, run_ranks_raw

N = 4096  # large enough that top-k 1 % really drops entries (k * P < n)
ENV = {"DISTX_COMPRESS": "topk:0.01", "DISTX_COMPRESS_MIN_BYTES": "1024"}


def _calls() -> int:
    import torch_distx

    return torch_distx.compression_stats()["calls"]


def _exact(fn):
    """A case that must leave the compressed-call counter unchanged."""

    def case(rank, ws, gloo):
        before = _calls()
        fn(rank, ws, gloo)
        assert _calls() == before, "this call was compressed"

    return case


def _allreduce_vs_gloo(dtype, op, n=N):
    def fn(rank, ws, gloo):
        x = values(dtype, op, n, rank)
        want = gloo_reduced(x, op, ws, gloo)
        got = x.clone()
        dist.all_reduce(got, op=getattr(dist.ReduceOp, op))
        check(got, want, f"all_reduce {dtype} {op}", op)

    return _exact(fn)


def _premul(rank, ws, gloo):
    x = values(torch.float32, "SUM", N, rank)
    want = x * 0.5
    dist.all_reduce(want, group=gloo)
    got = x.clone()
    dist.all_reduce(got, op=dist._make_nccl_premul_sum(0.5))
    check(got, want, "PREMUL_SUM")


def _broadcast(rank, ws, gloo):
    x = values(torch.float32, "SUM", N, rank)
    want = x.clone()
    dist.broadcast(want, 1, group=gloo)
    dist.broadcast(x, 1)
    check(x, want, "broadcast")


def _all_gather(rank, ws, gloo):
    x = values(torch.float32, "SUM", N, rank)
    got = [torch.empty_like(x) for _ in range(ws)]
    want = [torch.empty_like(x) for _ in range(ws)]
    dist.all_gather(got, x)
    dist.all_gather(want, x, group=gloo)
    for g, w in zip(got, want):
        check(g, w, "all_gather")
    out = torch.empty(ws * N)
    dist.all_gather_into_tensor(out, x)
    check(out, torch.cat(want), "all_gather_into_tensor")


def _reduce_scatter(rank, ws, gloo):
    x = values(torch.float32, "SUM", N * ws, rank)
    got = torch.empty(N)
    dist.reduce_scatter_tensor(got, x)
    full = x.clone()
    dist.all_reduce(full, group=gloo)  # exact: sums of quarters
    check(got, full[rank * N:(rank + 1) * N], "reduce_scatter_tensor")


def _reduce_and_alltoall(rank, ws, gloo):
    x = values(torch.float32, "SUM", N, rank)
    want = x.clone()
    dist.all_reduce(want, group=gloo)
    got = x.clone()
    dist.reduce(got, 0)
    if rank == 0:
        check(got, want, "reduce")
    a = values(torch.float32, "SUM", N * ws, rank)
    out, ref = torch.empty_like(a), torch.empty_like(a)
    dist.all_to_all_single(out, a)
    dist.all_to_all_single(ref, a, group=gloo)
    check(out, ref, "all_to_all_single")


def _p2p(rank, ws, gloo):
    x = values(torch.float32, "SUM", N, 0)
    if rank == 0:
        dist.send(x, 1)
    elif rank == 1:
        got = torch.empty(N)
        dist.recv(got, 0)
        check(got, x, "send/recv")


def _objects(rank, ws, gloo):
    objs = [{"rank": rank, "blob": list(range(2000))}]
    out = [None] * ws
    dist.all_gather_object(out, objs[0])
    assert [o["rank"] for o in out] == list(range(ws))
    lst = [torch.arange(3000.0) if rank == 0 else None]
    dist.broadcast_object_list(lst, 0)
    assert torch.equal(lst[0], torch.arange(3000.0))


def _sparse(rank, ws, gloo):
    idx = torch.tensor([[0, 5, 100 + rank]])
    t = torch.sparse_coo_tensor(idx, torch.tensor([1.0, 2.0, 3.0]), (2000,))
    want = t.clone()
    dist.all_reduce(want, group=gloo)
    got = t.clone()
    dist.all_reduce(got)
    check(got.coalesce().to_dense(), want.coalesce().to_dense(), "sparse all_reduce")


def _compressed(dtype, op):
    def case(rank, ws, gloo):
        import torch_distx

        before = torch_distx.compression_stats()
        x = torch.randn(N, generator=torch.Generator().manual_seed(rank)).to(dtype)
        got = x.clone()
        dist.all_reduce(got, op=getattr(dist.ReduceOp, op))
        after = torch_distx.compression_stats()
        assert after["calls"] == before["calls"] + 1
        everyone = [torch.empty_like(got) for _ in range(ws)]
        dist.all_gather(everyone, got, group=gloo)
        for r, other in enumerate(everyone):  # bit-identical on every rank
            assert torch.equal(other.view(torch.int16 if dtype != torch.float32 else torch.int32),
                               got.view(torch.int16 if dtype != torch.float32 else torch.int32)), r
        exact = x.to(torch.float64)
        dist.all_reduce(exact, group=gloo)
        if op == "AVG":
            exact /= ws
        assert not torch.allclose(got.to(torch.float64), exact, atol=1e-3), "looks uncompressed"
        nonzero = (got != 0).sum().item()
        assert 0 < nonzero <= ws * round(0.01 * N), nonzero  # only the top-k entries
        assert after["bytes_after"] < after["bytes_before"]

    return case


def _coalesced(rank, ws, gloo):
    import torch_distx

    before = _calls()
    ts = [torch.randn(3000, generator=torch.Generator().manual_seed(rank)) for _ in range(2)]
    dist.all_reduce_coalesced(ts)
    assert _calls() == before + 1
    assert sum(int((t != 0).sum()) for t in ts) <= ws * round(0.01 * 6000)
    small = [torch.ones(10), torch.ones(20)]  # 120 bytes < min_bytes: exact
    dist.all_reduce_coalesced(small)
    assert _calls() == before + 1 and torch.equal(small[0], torch.full((10,), float(ws)))
    assert torch_distx.compression_stats()["exact_calls"] > 0


def _cases(ws: int) -> dict:
    return {
        "int32_sum": _allreduce_vs_gloo(torch.int32, "SUM"),
        "int64_sum": _allreduce_vs_gloo(torch.int64, "SUM"),
        "uint8_max": _allreduce_vs_gloo(torch.uint8, "MAX"),
        "bool_max": _allreduce_vs_gloo(torch.bool, "MAX"),
        "f32_min": _allreduce_vs_gloo(torch.float32, "MIN"),
        "f32_max": _allreduce_vs_gloo(torch.float32, "MAX"),
        "f32_product": _allreduce_vs_gloo(torch.float32, "PRODUCT"),
        "f64_sum": _allreduce_vs_gloo(torch.float64, "SUM"),
        "f64_avg": _allreduce_vs_gloo(torch.float64, "AVG"),
        "f32_sum_below_min_bytes": _allreduce_vs_gloo(torch.float32, "SUM", n=100),
        "premul_sum": _exact(_premul),
        "broadcast": _exact(_broadcast),
        "all_gather": _exact(_all_gather),
        "reduce_scatter": _exact(_reduce_scatter),
        "reduce_alltoall": _exact(_reduce_and_alltoall),
        "send_recv": _exact(_p2p),
        "objects": _exact(_objects),
        "sparse": _exact(_sparse),
        "compressed_f32_sum": _compressed(torch.float32, "SUM"),
        "compressed_f32_avg": _compressed(torch.float32, "AVG"),
        "compressed_bf16_sum": _compressed(torch.bfloat16, "SUM"),
        "compressed_coalesced": _coalesced,
    }


TABLE = CaseTable(_cases, timeout=120, pg_timeout=60, env=ENV)


@pytest.mark.parametrize("ws,name", TABLE.params([3]))
def test_gate(ws, name):
    TABLE.check(ws, name)


def _options_worker(rank, ws):
    import torch_distx

    assert torch_distx.compression_stats()["method"] == "fp16"  # from the environment
    g = dist.new_group(pg_options=torch_distx.Options(compress="topk:0.05", compress_min_bytes=0))
    off = dist.new_group(pg_options=torch_distx.Options(compress="none"))
    s = torch_distx.compression_stats(g)
    x = torch.randn(1000, generator=torch.Generator().manual_seed(rank))
    dist.all_reduce(x, group=g)
    y = torch.ones(100000)
    dist.all_reduce(y, group=off)
    assert torch.equal(y, torch.full_like(y, ws))
    return s["method"], s["config"], s["source"], torch_distx.compression_stats(g)["calls"], \
        torch_distx.compression_stats(off)["calls"], int((x != 0).sum())


def test_options_beat_the_environment():
    out = run_ranks(_options_worker, 2, env={"DISTX_COMPRESS": "fp16"}, timeout=90)
    for method, config, source, calls, off_calls, nonzero in out:
        assert method == "topk" and source == "pg_options.compress", config
        assert "min_bytes=0" in config and "scope=inter" in config
        assert calls == 1 and off_calls == 0
        assert nonzero <= 2 * 50


def _init_only(rank, ws, options):
    import torch_distx
    from distx_testing import current_store

    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws,
                            pg_options=torch_distx.Options(**options) if options else None)


@pytest.mark.parametrize("env,options,needle", [
    ({"DISTX_COMPRESS": "fp8"}, None, "DISTX_COMPRESS must be one of fp16, bf16, topk:<ratio>"),
    ({"DISTX_COMPRESS": "topk:2"}, None, "DISTX_COMPRESS: the top-k ratio must be a number in (0, 1]"),
    ({"DISTX_COMPRESS": "fp16", "DISTX_COMPRESS_MIN_BYTES": "lots"}, None, "DISTX_COMPRESS_MIN_BYTES"),
    ({"DISTX_COMPRESS_EF": "2"}, None, "DISTX_COMPRESS_EF must be 0 or 1"),
    ({"DISTX_COMPRESS_SCOPE": "intra"}, None, "DISTX_COMPRESS_SCOPE must be inter or all"),
    ({}, {"compress": "topk:0"}, "pg_options.compress"),
    ({"DISTX_COMPRESS": "fp16"}, {"compress_scope": "everywhere"}, "pg_options.compress_scope"),
])
def test_bad_values_raise_value_error(env, options, needle):
    (res,) = run_ranks_raw(_init_only, 1, options, backend=None, env=env, timeout=60)
    assert not res.ok and res.exc_type == "ValueError", (res.exc_type, res.message)
    assert needle in res.message, res.message


def _pg_options_type(rank, ws):
    from distx_testing import current_store

    with pytest.raises(TypeError, match="torch_distx.Options"):
        dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws,
                                pg_options={"compress": "fp16"})


def test_pg_options_must_be_options():
    run_ranks(_pg_options_type, 1, backend=None, timeout=60)


def _logs_once(rank, ws, path):
    import torch_distx
    from distx_testing import current_store

    fd = os.open(f"{path}.{rank}", os.O_WRONLY | os.O_CREAT)
    os.dup2(fd, 2)  # the backend logs to stderr from C++
    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws)
    dist.new_group()  # same settings: not said again
    dist.new_group(pg_options=torch_distx.Options(compress="bf16"))  # new settings: said once


def test_rank0_logs_what_is_in_force_once():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "stderr")
        run_ranks(_logs_once, 2, path, backend=None, env={"DISTX_COMPRESS": "topk:0.01"}, timeout=60)
        logs = [open(f"{path}.{r}").read() for r in range(2)]
    lines = [line for line in logs[0].splitlines() if "compressing floating SUM/AVG" in line]
    assert len(lines) == 2, logs[0]
    assert "topk:0.01 ef=1 min_bytes=65536 scope=inter (from DISTX_COMPRESS)" in lines[0]
    assert "bf16 min_bytes=65536 scope=inter (from pg_options.compress)" in lines[1]
    assert "compressing" not in logs[1]


def _mismatch(rank, ws):
    from distx_testing import current_store

    if rank == 1:
        os.environ["DISTX_COMPRESS"] = "fp16"
    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws)


def test_settings_that_differ_between_ranks_fail_at_init():
    res = run_ranks_raw(_mismatch, 2, backend=None, timeout=60, grace=5)
    assert res[1].exc_type == "ValueError" and "compression settings differ" in res[1].message, res[1]


def _two_hosts(rank, ws, method, scope):
    import torch_distx
    from distx_testing import current_store

    os.environ["DISTX_HOSTID"] = f"switch-host-{rank // 2}"  # 2 hosts x 2 ranks
    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws,
                            pg_options=torch_distx.Options(compress=method, compress_scope=scope))
    assert torch_distx.topology()["num_nodes"] == 2
    n = 1 << 16
    x = torch.randn(n, generator=torch.Generator().manual_seed(rank))
    want = x.to(torch.float64)
    dist.all_reduce(want)  # float64: exact, and never compressed
    got = x.clone()
    dist.all_reduce(got)
    everyone = [torch.empty_like(got) for _ in range(ws)]
    dist.all_gather(everyone, got)
    assert all(torch.equal(e.view(torch.int32), got.view(torch.int32)) for e in everyone)
    st = torch_distx.compression_stats()
    return st, float((got.to(torch.float64) - want).abs().max())


@pytest.mark.parametrize("scope,pieces", [("inter", "auto"), ("all", "auto"), ("inter", "4096")])
def test_two_hosts_compress_the_inter_node_stage(scope, pieces):
    # pieces 4096: the split-rail runs pipelined, 32 pieces per segment, its
    # rail casting piece by piece (Note [Pipelined split-rail])
    out = run_ranks(_two_hosts, 4, "fp16", scope, backend=None, timeout=90,
                    env={"DISTX_PIECE_BYTES": pieces})
    n = 1 << 16
    for st, err in out:
        assert st["calls"] == 1
        assert err < 0.05
        # inter: each rank compresses its half on a 2-rank rail (a dense ring would send
        # its 4-byte elements once there); all: the flat 4-rank path.
        dense = n // 2 * 4 if scope == "inter" else 2 * 3 * n // 4 * 4
        assert st["bytes_before"] == dense, st
        assert st["bytes_after"] == dense // 2, st
