"""Every collective distx implements gives Gloo's result on the same inputs.

One world per size (2, 3, 4 ranks) runs every case: the default group is
distx, a second group over the same ranks is Gloo (dist.new_group), and each
case runs the same call on both and compares. Inputs are closed-form functions
of (rank, index) chosen so that the arithmetic is exact in every dtype, so most
comparisons are exact; each case also checks a torch reference computed from
every rank's input, so a bug shared with Gloo cannot hide. Random float inputs
(large tensors) use tolerances bounded by the reduction's rounding.

Each case is its own pytest item; the world for a size starts once (module
fixture) and reports every case's outcome back. This file: the values of
all_reduce (every op and dtype), all_reduce_coalesced, broadcast, all_gather and
all_gather_into_tensor, and pipelining chunk sizes; the inputs and oracles
here serve test_collectives_semantics.py too (async Works and futures, tensor
layouts, barrier, object collectives, sub-groups, destroy with Works pending).
"""

from __future__ import annotations

import functools
from typing import Callable

import pytest
import torch
import torch.distributed as dist

from distx_testing import CaseTable, run_ranks

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

def cases(ws: int) -> dict[str, Case]:
    """Every value case for world size ws, by name (the pytest ids)."""
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
    return c

class CaseTables:
    """The worlds of a cases() table: rendezvous through a FileStore, and a
    TCPStore for the 3-rank world (both kinds torch uses)."""

    def __init__(self, cases: Callable[[int], dict[str, Case]]) -> None:
        self.tables = {store: CaseTable(cases, timeout=150, pg_timeout=60, store=store) for store in ("file", "tcp")}
        self.params = self.tables["file"].params(WORLD_SIZES)

    def check(self, ws: int, name: str) -> None:
        __tracebackhide__ = True
        self.tables["tcp" if ws == 3 else "file"].check(ws, name)


_TABLES = CaseTables(cases)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("ws,name", _TABLES.params)
def test_collective_matches_gloo(ws: int, name: str) -> None:
    _TABLES.check(ws, name)


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
