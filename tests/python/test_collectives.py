"""Every collective distx implements gives Gloo's result on the same inputs.

One world per size (2, 3, 4 ranks) runs every case: the default group is
distx, a second group over the same ranks is Gloo (dist.new_group), and each
case runs the same call on both and compares. Inputs are closed-form functions
of (rank, index) chosen so that the arithmetic is exact in every dtype, so most
comparisons are exact; each case also checks a torch reference computed from
every rank's input, so a bug shared with Gloo cannot hide. Random float inputs
(large tensors) use tolerances bounded by the reduction's rounding.

Each case is its own pytest item; the world for a size starts once (module
fixture) and reports every case's outcome back.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import pytest
import torch
import torch.distributed as dist

from distx_testing import CaseTable, current_store, run_ranks

WORLD_SIZES = (2, 3, 4)
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64)
OPS = ("SUM", "AVG", "MIN", "MAX", "PRODUCT")
PRIME = 10007
LARGE = 1_000_003  # ~1M, prime: uneven ring segments, several pipelined chunks each


def _counts(ws: int) -> list[int]:
    return sorted({0, 1, ws - 1, ws + 1, PRIME})


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------- inputs

def _values(dtype: torch.dtype, op: str, n: int, rank: int, salt: int = 0) -> torch.Tensor:
    """Closed-form input of `rank`: exact under every op in every dtype.

    PRODUCT: factors in {±1, ±2, ±1/2} (ints: {±1, ±2}), so products of up to
    4 ranks are powers of two. Otherwise k/4 with |k| <= 20 (ints: k), so sums
    of up to 4 ranks need at most 7 significant bits (exact in bfloat16)."""
    if op == "PRODUCT":
        table = [1.0, -2.0, 2.0, -1.0, 0.5, -0.5] if dtype.is_floating_point else [1, -2, 2, -1]
        period = [table[(i * 5 + rank * 3 + salt) % len(table)] for i in range(len(table))]
    else:  # k = (7i + 13 rank + 5 salt) mod 41 - 20, in quarters for floating types
        period = [((i * 7 + rank * 13 + salt * 5) % 41 - 20) / (4 if dtype.is_floating_point else 1)
                  for i in range(41)]
    # periodic in i: tile one period (much cheaper than elementwise int64 math on 1M elements)
    base = torch.tensor(period, dtype=torch.float64).to(dtype)
    return base.repeat(-(-n // len(period)))[:n].clone()


@functools.lru_cache(maxsize=8)
def _reference(dtype: torch.dtype, op: str, n: int, ws: int, salt: int = 0) -> torch.Tensor:
    """What all_reduce must produce, from every rank's input (float64 math).
    Cached: callers must not modify it."""
    period = 41 if op != "PRODUCT" else (6 if dtype.is_floating_point else 4)
    if n > period:  # inputs are periodic in the index, so is the result
        return _reference(dtype, op, period, ws, salt).repeat(-(-n // period))[:n]
    x = torch.stack([_values(dtype, op, n, r, salt) for r in range(ws)])
    wide = x.to(torch.float64) if dtype.is_floating_point else x.to(torch.int64)
    if op in ("SUM", "AVG"):
        out = wide.sum(0)
        if op == "AVG":
            out = out / ws if dtype.is_floating_point else torch.div(out, ws, rounding_mode="trunc")
    elif op == "PRODUCT":
        out = wide.prod(0)
    elif op == "MIN":
        out = wide.min(0).values
    else:
        out = wide.max(0).values
    return out.to(dtype)


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def _assert_equal(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if not torch.equal(got, want):
        bad = (got != want).nonzero()
        j = tuple(bad[0].tolist())
        raise AssertionError(f"{what}: {len(bad)} of {got.numel()} elements differ; first at {j}: "
                             f"got {got[j].item()}, want {want[j].item()}")


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str, atol: float, rtol: float = 0.0) -> None:
    """|got - want| <= atol + rtol * |want| elementwise (torch.testing's rule; its
    first call costs seconds of imports in every rank, so it is not used here)."""
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    g, w = got.to(torch.float64), want.to(torch.float64)
    diff = (g - w).abs()
    bad = (diff > atol + rtol * w.abs()).nonzero()
    if len(bad):
        j = tuple(bad[0].tolist())
        raise AssertionError(f"{what}: {len(bad)} of {got.numel()} elements differ by more than atol={atol:g} "
                             f"rtol={rtol:g}; first at {j}: got {g[j].item()}, want {w[j].item()}; "
                             f"max |diff| {diff.max().item():g}")


# ---------------------------------------------------------------- cases
# A case is fn(rank, ws, gloo_group) that raises AssertionError on a mismatch.

Case = Callable[[int, int, object], None]


def _gloo_all_reduce(g: torch.Tensor, op: str, ws: int, gloo) -> torch.Tensor:
    """Gloo's answer. Gloo has AVG only for floating types; for integers the
    oracle is Gloo's SUM / P truncated toward zero (what NCCL and distx do)."""
    if op == "AVG" and not g.dtype.is_floating_point:
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=gloo)
        return torch.div(g, ws, rounding_mode="trunc")
    dist.all_reduce(g, op=getattr(dist.ReduceOp, op), group=gloo)
    return g


def _check_reduced(t: torch.Tensor, want: torch.Tensor, g: torch.Tensor, op: str, what: str = "") -> None:
    if op == "AVG" and t.dtype.is_floating_point:
        # the sum is exact; sum / P rounds once (16-bit types: via float32): 1 ulp apart at most
        eps = _eps(t.dtype)
        _assert_close(t, want, f"{what}distx vs reference", atol=eps, rtol=eps)
        _assert_close(t, g, f"{what}distx vs gloo", atol=eps, rtol=eps)
    else:
        _assert_equal(t, want, f"{what}distx vs reference")
        _assert_equal(t, g, f"{what}distx vs gloo")


def _all_reduce_case(dtype: torch.dtype, op: str, n: int) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        t = _values(dtype, op, n, rank)
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        g = _gloo_all_reduce(_values(dtype, op, n, rank), op, ws, gloo)
        _check_reduced(t, _reference(dtype, op, n, ws), g, op)
    return run


def _all_reduce_random_case(dtype: torch.dtype, op: str, n: int) -> Case:
    """Random floats in [-1, 1): sums are not exact, and ranks combine partial sums in
    another order than Gloo; the gap is at most about P roundings of a value <= P."""
    def run(rank: int, ws: int, gloo) -> None:
        rop = getattr(dist.ReduceOp, op)
        inputs = [torch.rand(n, generator=torch.Generator().manual_seed(1000 + r), dtype=torch.float64) * 2 - 1
                  for r in range(ws)]
        t = inputs[rank].to(dtype, copy=True)  # (float64: .to would alias the input)
        g = t.clone()
        dist.all_reduce(t, op=rop)
        dist.all_reduce(g, op=rop, group=gloo)
        want = torch.stack([x.to(dtype).to(torch.float64) for x in inputs]).sum(0)
        if op == "AVG":
            want = want / ws
        atol = 2 * ws * ws * _eps(dtype)
        _assert_close(t, want.to(dtype), "distx vs float64 reference", atol=atol)
        _assert_close(t, g, "distx vs gloo", atol=atol)
    return run


def _all_reduce_bitwise_case(dtype: torch.dtype, op: str) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        n = 2 * PRIME + 1
        x = (torch.arange(n, dtype=torch.int64) * 2654435761 + rank * 40503) % 251
        t = x.to(dtype) if dtype != torch.bool else (x % 3 == 0)
        g = t.clone()
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        dist.all_reduce(g, op=getattr(dist.ReduceOp, op), group=gloo)
        _assert_equal(t, g, "distx vs gloo")
    return run


def _all_reduce_premul_case(dtype: torch.dtype) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        t = _values(dtype, "SUM", PRIME, rank)
        dist.all_reduce(t, op=dist._make_nccl_premul_sum(0.5))
        _assert_equal(t, (_reference(dtype, "SUM", PRIME, ws).double() * 0.5).to(dtype), "distx vs reference")
    return run


def _all_reduce_coalesced_case(dtype: torch.dtype, op: str) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        shapes = [(3, 5), (0,), (1,), (ws + 1,), (7, 11, 13)]
        ts = [_values(dtype, op, torch.Size(s).numel(), rank, salt=j).view(s) for j, s in enumerate(shapes)]
        gs = [t.clone() for t in ts]
        dist.all_reduce_coalesced(ts, op=getattr(dist.ReduceOp, op))
        for j, (t, g) in enumerate(zip(ts, gs)):
            g = _gloo_all_reduce(g, op, ws, gloo)
            want = _reference(dtype, op, t.numel(), ws, salt=j).view(t.shape)
            _check_reduced(t, want, g, op, f"tensor {j}: ")
    return run


def _broadcast_case(dtype: torch.dtype, n: int) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        for root in range(ws):
            t = _values(dtype, "SUM", n, rank) if dtype != torch.bool else _values(torch.int64, "SUM", n, rank) > 0
            g = t.clone()
            want = (_values(dtype, "SUM", n, root) if dtype != torch.bool
                    else _values(torch.int64, "SUM", n, root) > 0)
            dist.broadcast(t, src=root)
            dist.broadcast(g, src=root, group=gloo)
            _assert_equal(t, want, f"root {root}: distx vs root's input")
            _assert_equal(t, g, f"root {root}: distx vs gloo")
    return run


def _all_gather_case(dtype: torch.dtype, n: int, shape_2d: bool = False) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        x = _values(dtype, "SUM", n, rank)
        if shape_2d:
            x = x.view(1, n)
        outs = [torch.full_like(x, 99) for _ in range(ws)]
        gouts = [torch.zeros_like(x) for _ in range(ws)]
        dist.all_gather(outs, x)
        dist.all_gather(gouts, x, group=gloo)
        for r in range(ws):
            want = _values(dtype, "SUM", n, r).view(x.shape)
            _assert_equal(outs[r], want, f"block {r}: distx vs rank {r}'s input")
            _assert_equal(outs[r], gouts[r], f"block {r}: distx vs gloo")
    return run


def _all_gather_into_tensor_case(dtype: torch.dtype, n: int) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        x = _values(dtype, "SUM", n, rank)
        want = torch.cat([_values(dtype, "SUM", n, r) for r in range(ws)])
        out = torch.full((ws * n,), 99, dtype=dtype)
        gout = torch.zeros(ws * n, dtype=dtype)
        dist.all_gather_into_tensor(out, x)
        dist.all_gather_into_tensor(gout, x, group=gloo)
        _assert_equal(out, want, "distx vs inputs")
        _assert_equal(out, gout, "distx vs gloo")
        # the stacked (P, n) output form (Gloo accepts only the flat one)
        out2 = torch.full((ws, n), 99, dtype=dtype)
        dist.all_gather_into_tensor(out2, x)
        _assert_equal(out2, want.view(ws, n), "stacked output distx vs inputs")
        # in place: the input is this rank's slice of the output (what FSDP does)
        out3 = torch.zeros(ws * n, dtype=dtype)
        out3[rank * n:(rank + 1) * n] = x
        dist.all_gather_into_tensor(out3, out3[rank * n:(rank + 1) * n])
        _assert_equal(out3, want, "in-place distx vs inputs")
    return run


def _barrier_case(rank: int, ws: int, gloo) -> None:
    store = current_store()
    for it in range(3):
        if rank == it % ws:
            time.sleep(0.2)  # the late rank: nobody may leave the barrier before it entered
        store.set(f"barrier-test/{it}/{rank}", "in")
        dist.barrier()
        missing = [r for r in range(ws) if not store.check([f"barrier-test/{it}/{r}"])]
        assert not missing, f"round {it}: left the barrier before ranks {missing} entered it"


def _non_contiguous_case(rank: int, ws: int, gloo) -> None:
    # all_reduce on a strided view and on a transpose: results land in the view,
    # the rest of the base tensor is untouched.
    base = _values(torch.float32, "SUM", 6 * 10, rank).view(6, 10)
    keep = base.clone()
    view = base[1::2, ::3]
    assert not view.is_contiguous()
    g = view.contiguous()
    dist.all_reduce(view)
    dist.all_reduce(g, group=gloo)
    _assert_equal(view, g, "strided all_reduce distx vs gloo")
    _assert_equal(view, _reference(torch.float32, "SUM", 60, ws).view(6, 10)[1::2, ::3], "strided vs reference")
    mask = torch.ones(6, 10, dtype=torch.bool)
    mask[1::2, ::3] = False
    _assert_equal(base[mask], keep[mask], "elements outside the view")

    tt = _values(torch.int64, "MAX", 7 * 9, rank).view(7, 9).t()
    g = tt.contiguous()
    dist.all_reduce(tt, op=dist.ReduceOp.MAX)
    dist.all_reduce(g, op=dist.ReduceOp.MAX, group=gloo)
    _assert_equal(tt, g, "transposed all_reduce distx vs gloo")

    # broadcast into a strided view
    base = torch.full((4, 9), -1.0, dtype=torch.float64)
    view = base[:, 1::2]
    view.copy_(_values(torch.float64, "SUM", view.numel(), rank).view(view.shape))
    dist.broadcast(view, src=ws - 1)
    _assert_equal(view, _values(torch.float64, "SUM", view.numel(), ws - 1).view(view.shape), "strided broadcast")
    assert (base[:, 0::2] == -1).all(), "broadcast wrote outside the view"

    # all_gather from a non-contiguous input into non-contiguous outputs
    x = _values(torch.float32, "SUM", 24, rank).view(4, 6)[:, ::2]
    holders = [torch.full((3, 8), -1.0) for _ in range(ws)]
    outs = [h[:, 1:5] for h in holders]
    dist.all_gather(outs, x.t())
    gouts = [torch.zeros(3, 4) for _ in range(ws)]
    dist.all_gather(gouts, x.t().contiguous(), group=gloo)
    for r in range(ws):
        _assert_equal(outs[r], gouts[r], f"block {r}: non-contiguous all_gather distx vs gloo")
        assert (holders[r][:, 0] == -1).all() and (holders[r][:, 5:] == -1).all(), "all_gather wrote outside the view"

    # all_gather_into_tensor into a non-contiguous output
    holder = torch.full((ws * 5, 2), -1.0)
    out = holder[:, 0]
    dist.all_gather_into_tensor(out, _values(torch.float32, "SUM", 5, rank))
    _assert_equal(out, torch.cat([_values(torch.float32, "SUM", 5, r) for r in range(ws)]), "strided output")
    assert (holder[:, 1] == -1).all()

    # all_reduce_coalesced of views
    base = _values(torch.float32, "SUM", 40, rank).view(5, 8)
    ts = [base[:, ::2], base[1:3, 1::2]]
    gs = [t.contiguous() for t in ts]
    dist.all_reduce_coalesced(ts)
    for j, (t, g) in enumerate(zip(ts, gs)):
        dist.all_reduce(g, group=gloo)
        _assert_equal(t, g, f"coalesced view {j}")


def _future_values(fut_value) -> list:
    return [v.clone() for v in fut_value]


def _async_semantics_case(rank: int, ws: int, gloo) -> None:
    for name, group in (("distx", None), ("gloo", gloo)):
        t = _values(torch.float32, "SUM", PRIME, rank)
        work = dist.all_reduce(t, async_op=True, group=group)
        assert work.wait() is True, f"{name}: wait() did not return True"
        assert work.is_completed(), f"{name}: not completed after wait()"
        fut = work.get_future()
        assert fut.done()
        value = fut.value()
        assert isinstance(value, list) and len(value) == 1, f"{name}: future value {value!r}"
        assert value[0].data_ptr() == t.data_ptr(), f"{name}: the future's tensor is not the (in-place) input"
        _assert_equal(t, _reference(torch.float32, "SUM", PRIME, ws), f"{name}: result")

        # chaining: each .then runs after the result is in place
        t = _values(torch.float32, "SUM", 33, rank)
        fut = dist.all_reduce(t, async_op=True, group=group).get_future()
        doubled = fut.then(lambda f: f.value()[0] * 2)
        summed = doubled.then(lambda f: f.value().sum().item())
        want = _reference(torch.float32, "SUM", 33, ws)
        _assert_equal(doubled.wait(), want * 2, f"{name}: .then result")
        assert summed.wait() == (want * 2).sum().item(), f"{name}: second .then"

        # futures of the other collectives: the output tensors
        t = _values(torch.int64, "SUM", 5, rank)
        v = dist.broadcast(t, src=0, async_op=True, group=group).get_future().wait()
        assert len(v) == 1 and v[0].data_ptr() == t.data_ptr(), f"{name}: broadcast future {v!r}"
        outs = [torch.zeros(4, dtype=torch.int64) for _ in range(ws)]
        v = dist.all_gather(outs, torch.full((4,), rank), async_op=True, group=group).get_future().wait()
        assert [x.data_ptr() for x in v] == [o.data_ptr() for o in outs], f"{name}: all_gather future {v!r}"
        assert [o.tolist() for o in outs] == [[r] * 4 for r in range(ws)]
        assert dist.barrier(async_op=True, group=group).get_future().wait() == [], f"{name}: barrier future"
        # all_reduce_coalesced(async_op=True) returns a Future directly
        ts = [torch.ones(2), torch.ones(3, 2)]
        v = dist.all_reduce_coalesced(ts, async_op=True, group=group).wait()
        assert all((x == ws).all() for x in ts), f"{name}: coalesced result"

    # all_gather_into_tensor's future holds the output (Gloo's holds its chunks; distx follows NCCL)
    out = torch.zeros(ws * 3)
    v = dist.all_gather_into_tensor(out, torch.full((3,), float(rank)), async_op=True).get_future().wait()
    assert len(v) == 1 and v[0].data_ptr() == out.data_ptr(), f"all_gather_into_tensor future {v!r}"


def _is_completed_case(rank: int, ws: int, gloo) -> None:
    """A Work is not complete while a peer has not joined, and completes once it does."""
    store = current_store()
    t = torch.full((100,), float(rank))
    if rank == 0:
        work = dist.all_reduce(t, async_op=True)
        time.sleep(0.2)
        early = work.is_completed()
        store.set("is-completed-test/go", "1")
        work.wait()
        assert not early, "is_completed() was True before the other ranks joined"
        assert work.is_completed()
    else:
        store.wait(["is-completed-test/go"])
        dist.all_reduce(t)
    assert (t == sum(range(ws))).all()


def _in_flight_case(rank: int, ws: int, gloo) -> None:
    """Many collectives in flight at once, waited out of order, on distx and Gloo together."""
    specs = [(dt, op, n) for dt, op, n in [
        (torch.float32, "SUM", LARGE), (torch.int64, "MAX", PRIME), (torch.float64, "PRODUCT", 1),
        (torch.bfloat16, "SUM", 3), (torch.int32, "MIN", 0), (torch.float16, "SUM", ws + 1),
        (torch.float32, "AVG", 257), (torch.int64, "SUM", 65537)]]
    works, tensors = [], []
    for dt, op, n in specs:
        t = _values(dt, op, n, rank)
        works.append(dist.all_reduce(t, op=getattr(dist.ReduceOp, op), async_op=True))
        tensors.append(t)
    bc = _values(torch.float64, "SUM", 1000, rank)
    works.append(dist.broadcast(bc, src=ws - 1, async_op=True))
    outs = [torch.zeros(17, dtype=torch.int32) for _ in range(ws)]
    works.append(dist.all_gather(outs, _values(torch.int32, "SUM", 17, rank), async_op=True))
    g = _values(torch.float32, "SUM", 1000, rank)
    gwork = dist.all_reduce(g, async_op=True, group=gloo)
    futs = torch.futures.collect_all([w.get_future() for w in works[: len(specs) // 2]])
    for w in reversed(works[len(specs) // 2:]):
        w.wait()
    futs.wait()
    gwork.wait()
    for (dt, op, n), t in zip(specs, tensors):
        want = _reference(dt, op, n, ws)
        if op == "AVG":
            _assert_close(t, want, f"{op} {dt} n={n}", atol=_eps(dt), rtol=_eps(dt))
        else:
            _assert_equal(t, want, f"{op} {dt} n={n}")
    _assert_equal(bc, _values(torch.float64, "SUM", 1000, ws - 1), "broadcast")
    for r in range(ws):
        _assert_equal(outs[r], _values(torch.int32, "SUM", 17, r), f"all_gather block {r}")
    _assert_equal(g, _reference(torch.float32, "SUM", 1000, ws), "gloo all_reduce in between")


def _edge_shapes_case(rank: int, ws: int, gloo) -> None:
    # 0-d tensors (a loss averaged across ranks is the common case)
    t = torch.tensor(float(rank + 1))
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    assert t.shape == () and t.item() == (ws + 1) / 2, t
    t = torch.tensor(rank * 10)
    dist.broadcast(t, src=ws - 1)
    assert t.shape == () and t.item() == (ws - 1) * 10
    outs = [torch.tensor(-1) for _ in range(ws)]
    dist.all_gather(outs, torch.tensor(rank))
    assert [o.item() for o in outs] == list(range(ws))
    # a contiguous slice with a storage offset: neighbours stay untouched
    big = torch.full((50,), -7.0)
    part = big[11:11 + PRIME % 31]
    part.copy_(_values(torch.float32, "SUM", part.numel(), rank))
    dist.all_reduce(part)
    _assert_equal(part, _reference(torch.float32, "SUM", part.numel(), ws), "offset slice")
    assert (big[:11] == -7).all() and (big[11 + part.numel():] == -7).all(), "wrote outside the slice"
    # all_gather_into_tensor of a 2-D input: concatenated along dim 0
    x = _values(torch.int64, "SUM", 6, rank).view(2, 3)
    out = torch.zeros(2 * ws, 3, dtype=torch.int64)
    gout = torch.zeros(2 * ws, 3, dtype=torch.int64)
    dist.all_gather_into_tensor(out, x)
    dist.all_gather_into_tensor(gout, x, group=gloo)
    _assert_equal(out, gout, "2-D all_gather_into_tensor distx vs gloo")


def _object_collectives_case(rank: int, ws: int, gloo) -> None:
    """torch's object collectives: all_gather of sizes, then of padded uint8 payloads; broadcast."""
    objs = [None] * ws
    mine = {"rank": rank, "payload": "x" * (rank * 1000 + 3), "t": torch.arange(rank + 1)}
    dist.all_gather_object(objs, mine)
    for r, o in enumerate(objs):
        assert o["rank"] == r and len(o["payload"]) == r * 1000 + 3 and o["t"].tolist() == list(range(r + 1))
    lst = [f"from {rank}", rank, {"k": [rank] * rank}]
    dist.broadcast_object_list(lst, src=ws - 1)
    assert lst == [f"from {ws - 1}", ws - 1, {"k": [ws - 1] * (ws - 1)}], lst


def _subgroups_case(rank: int, ws: int, gloo) -> None:
    """distx sub-groups (separate backend instances) beside the default group,
    including a one-rank group and a group of non-adjacent ranks."""
    members = [0, ws - 1]
    pair = dist.new_group(members, backend="distx")
    solo = dist.new_group([ws - 1], backend="distx")
    background = _values(torch.float32, "SUM", 100_000, rank)
    bg_work = dist.all_reduce(background, async_op=True)  # default group, in flight meanwhile
    if rank in members:
        t = _values(torch.int64, "SUM", PRIME, rank)
        dist.all_reduce(t, group=pair)
        want = _values(torch.int64, "SUM", PRIME, 0) + _values(torch.int64, "SUM", PRIME, ws - 1)
        _assert_equal(t, want, "pair all_reduce")
        b = _values(torch.float64, "SUM", 33, rank)
        dist.broadcast(b, src=ws - 1, group=pair)  # src is a global rank
        _assert_equal(b, _values(torch.float64, "SUM", 33, ws - 1), "pair broadcast")
        outs = [torch.zeros(5, dtype=torch.int32) for _ in members]
        dist.all_gather(outs, torch.full((5,), rank, dtype=torch.int32), group=pair)
        assert [o[0].item() for o in outs] == members
        dist.barrier(group=pair)
    if rank == ws - 1:
        t = _values(torch.bfloat16, "SUM", 17, rank)
        dist.all_reduce(t, op=dist.ReduceOp.AVG, group=solo)
        _assert_equal(t, _values(torch.bfloat16, "SUM", 17, rank), "one-rank all_reduce")
        outs = [torch.zeros(3)]
        dist.all_gather(outs, torch.ones(3), group=solo)
        assert outs[0].tolist() == [1.0, 1.0, 1.0]
        dist.broadcast(t, src=ws - 1, group=solo)
        dist.barrier(group=solo)
    bg_work.wait()
    _assert_equal(background, _reference(torch.float32, "SUM", 100_000, ws), "default-group all_reduce")
    dist.destroy_process_group(solo)
    dist.destroy_process_group(pair)
    t = torch.ones(3)
    dist.all_reduce(t)  # the default group is unaffected
    assert t.tolist() == [float(ws)] * 3


def _pending_at_destroy(rank: int, ws: int) -> list:
    """Works never waited for before destroy_process_group still complete."""
    ts = [_values(torch.float32, "SUM", n, rank) for n in (1, 1000, PRIME, 300_000)]
    for t in ts:
        dist.all_reduce(t, async_op=True)
    dist.destroy_process_group()
    return [torch.equal(t, _reference(torch.float32, "SUM", t.numel(), ws)) for t in ts]


def cases(ws: int) -> dict[str, Case]:
    """Every case for world size ws, by name (the pytest ids)."""
    c: dict[str, Case] = {}
    for dt in DTYPES:
        for op in OPS:
            for n in _counts(ws):
                c[f"all_reduce-{_dt(dt)}-{op}-n{n}"] = _all_reduce_case(dt, op, n)
        c[f"all_reduce-{_dt(dt)}-SUM-n{LARGE}"] = _all_reduce_case(dt, "SUM", LARGE)
    for op in ("AVG", "MIN", "MAX", "PRODUCT"):
        c[f"all_reduce-float32-{op}-n{LARGE}"] = _all_reduce_case(torch.float32, op, LARGE)
    for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for op in ("SUM", "AVG"):
            c[f"all_reduce-random-{_dt(dt)}-{op}-n{LARGE}"] = _all_reduce_random_case(dt, op, LARGE)
        c[f"all_reduce-{_dt(dt)}-PREMUL_SUM"] = _all_reduce_premul_case(dt)
    for dt in (torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool):
        for op in ("BAND", "BOR", "BXOR"):
            c[f"all_reduce-{_dt(dt)}-{op}"] = _all_reduce_bitwise_case(dt, op)
    for dt in (torch.float32, torch.int64, torch.bfloat16):
        for op in ("SUM", "MAX", "AVG"):
            c[f"all_reduce_coalesced-{_dt(dt)}-{op}"] = _all_reduce_coalesced_case(dt, op)
    for dt in DTYPES + (torch.uint8, torch.int8, torch.bool):
        for n in _counts(ws):
            c[f"broadcast-{_dt(dt)}-n{n}"] = _broadcast_case(dt, n)
    c[f"broadcast-float32-n{LARGE}"] = _broadcast_case(torch.float32, LARGE)
    for dt in DTYPES:
        for n in _counts(ws):
            c[f"all_gather-{_dt(dt)}-n{n}"] = _all_gather_case(dt, n)
            c[f"all_gather_into_tensor-{_dt(dt)}-n{n}"] = _all_gather_into_tensor_case(dt, n)
    c["all_gather-float32-2d"] = _all_gather_case(torch.float32, PRIME, shape_2d=True)
    c[f"all_gather-float32-n{LARGE}"] = _all_gather_case(torch.float32, LARGE)
    c[f"all_gather_into_tensor-float32-n{LARGE}"] = _all_gather_into_tensor_case(torch.float32, LARGE)
    c["barrier"] = _barrier_case
    c["non_contiguous"] = _non_contiguous_case
    c["async_semantics"] = _async_semantics_case
    c["async_is_completed"] = _is_completed_case
    c["async_many_in_flight"] = _in_flight_case
    c["edge_shapes"] = _edge_shapes_case
    c["object_collectives"] = _object_collectives_case
    c["subgroups"] = _subgroups_case
    return c


# rendezvous: FileStore, and a TCPStore for the 3-rank world (both kinds torch uses)
_TABLES = {store: CaseTable(cases, timeout=150, pg_timeout=60, store=store) for store in ("file", "tcp")}
_PARAMS = [pytest.param(ws, name, id=f"P{ws}-{name}") for ws in WORLD_SIZES for name in cases(ws)]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("ws,name", _PARAMS)
def test_collective_matches_gloo(ws: int, name: str) -> None:
    _TABLES["tcp" if ws == 3 else "file"].check(ws, name)


def _odd_chunks_worker(rank: int, ws: int) -> list:
    bad = []
    for dt in (torch.float64, torch.float32, torch.float16, torch.int64, torch.int8):
        for n in (1, 511, 4099, 100_003):
            for op in ("SUM", "MAX"):
                t = _values(dt, op, n, rank)
                dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
                if not torch.equal(t, _reference(dt, op, n, ws)):
                    bad.append(f"all_reduce {op} {dt} n={n}")
        outs = [torch.zeros(777, dtype=dt) for _ in range(ws)]
        dist.all_gather(outs, _values(dt, "SUM", 777, rank))
        if not all(torch.equal(outs[r], _values(dt, "SUM", 777, r)) for r in range(ws)):
            bad.append(f"all_gather {dt}")
        b = _values(dt, "SUM", 50_001, rank)
        dist.broadcast(b, src=ws - 1)
        if not torch.equal(b, _values(dt, "SUM", 50_001, ws - 1)):
            bad.append(f"broadcast {dt}")
    c = torch.full((3001,), complex(rank, -rank), dtype=torch.complex128)
    dist.all_reduce(c)
    if not torch.equal(c, torch.full((3001,), complex(sum(range(ws)), -sum(range(ws))), dtype=torch.complex128)):
        bad.append("all_reduce complex128")
    return bad


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunk", ["4096", "4097", "5003"])
def test_pipelining_chunk_sizes_not_multiple_of_element_size(chunk: str) -> None:
    """DISTX_CHUNK_BYTES that no element size divides: chunks must still split on
    element boundaries (a reduction over half an element would be garbage)."""
    for rank, bad in enumerate(run_ranks(_odd_chunks_worker, 3, env={"DISTX_CHUNK_BYTES": chunk}, timeout=45)):
        assert not bad, f"rank {rank} with DISTX_CHUNK_BYTES={chunk}: wrong results for {bad}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ws", [2, 3])
def test_work_pending_at_destroy_completes(ws: int) -> None:
    for rank, ok in enumerate(run_ranks(_pending_at_destroy, ws, timeout=40, pg_timeout=30)):
        assert all(ok), f"rank {rank}: results of un-waited Works after destroy: {ok}"


def _then_issues_collective(rank: int, ws: int, backend: str) -> list[float]:
    group = None if backend == "distx" else dist.new_group(backend="gloo")
    store = current_store()
    a, b = torch.full((4,), float(rank)), torch.ones(4)

    def callback(fut):
        # what PowerSGD's hook does: a collective issued and waited for inside .then
        dist.all_reduce(b, group=group, async_op=True).get_future().wait()
        return fut.value()[0] + b

    # Rank 0 attaches the callback while its all_reduce surely is still pending
    # (nobody else joined yet), so the callback runs when the backend completes
    # the Work, not inline in .then().
    if rank > 0:
        store.wait([f"then-test/{backend}/attached"])
    fut = dist.all_reduce(a, group=group, async_op=True).get_future().then(callback)
    if rank == 0:
        store.set(f"then-test/{backend}/attached", "1")
    return fut.wait().tolist()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["gloo", "distx"])
def test_then_callback_can_issue_a_collective(backend: str) -> None:
    """A Future.then callback may run another collective on the same group and
    wait for it (torch's PowerSGD hook does; see test_ddp.py). Regression test:
    distx used to run callbacks inline on the group's only worker thread, so the
    inner all_reduce could never start and the ranks hung (fixed in bca9c2d,
    callbacks on a completion pool)."""
    ws = 2
    results = run_ranks(_then_issues_collective, ws, backend, timeout=12, pg_timeout=4, grace=2)
    assert results == [[float(sum(range(ws)) + ws)] * 4] * ws


def _aliased_output_list(rank: int, ws: int) -> dict:
    gloo = dist.new_group(backend="gloo")
    out = {}
    for name, group in (("distx", None), ("gloo", gloo)):
        got = set()
        for n in (4, 1000, 300_000):  # eager and rendezvous-sized messages
            x = torch.full((n,), float(rank + 1))
            # rank 0 makes the classic mistake: one tensor repeated, [t] * world_size
            outs = [torch.zeros(n)] * ws if rank == 0 else [torch.zeros(n) for _ in range(ws)]
            dist.all_gather(outs, x, group=group)
            got.add(tuple(sorted({v for o in outs for v in o.unique().tolist()})) if rank == 0 else
                    tuple(tuple(o.unique().tolist()) for o in outs))
        out[name] = sorted(got)
    return out


@pytest.mark.timeout(60)
def test_aliased_output_list_on_one_rank_does_not_corrupt_the_others() -> None:
    """BUG (distx): when one rank passes all_gather an output list whose entries
    are the same tensor ([torch.zeros(n)] * world_size, a common mistake), the
    ring forwards blocks out of that rank's (overwritten) output memory, so the
    OTHER ranks silently receive wrong data. With 3 ranks, rank 0 aliased, each
    rank contributing rank + 1: expected on ranks 1 and 2 (Gloo's answer) blocks
    [1, 2, 3]; distx gives e.g. [3, 2, 3] or [1, 2, 2] (timing-dependent).
    What the aliasing rank itself ends up with is undefined (Gloo: the last
    block in every entry)."""
    ws = 3
    results = run_ranks(_aliased_output_list, ws, timeout=40, pg_timeout=20)
    want = [tuple((float(r + 1),) for r in range(ws))]  # every size: block r is all r + 1
    for rank in range(1, ws):
        assert results[rank]["gloo"] == want, results[rank]
        assert results[rank]["distx"] == want, (
            f"rank {rank} got {results[rank]['distx']} from distx (Gloo: {results[rank]['gloo']}) "
            f"because rank 0's output list aliased one tensor")
