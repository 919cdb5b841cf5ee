"""Closed-form inputs and oracles for the collective tests (test_collectives_more.py,
test_hierarchical.py, test_p2p_groups.py).

ALL_DTYPES and ops_for() are the (dtype, op) matrix the reducing collectives
cover, values() gives each rank an input whose reductions over <= 4 ranks are
exact in every dtype, reference() the reduction computed from every rank's
input, gloo_reduced() Gloo's answer on the same input, check() an exact
comparison (one rounding allowed for AVG on floating types).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["ALL_DTYPES", "FLOATS", "INTS", "check", "gloo_reduced", "ops_for", "reduce_op", "reference",
           "values"]

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
INTS = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
ALL_DTYPES = FLOATS + INTS + (torch.bool, torch.complex64, torch.complex128)


def ops_for(dtype: torch.dtype) -> tuple[str, ...]:
    """The reduce ops distx supports on `dtype` (AVG and PREMUL_SUM included)."""
    if dtype == torch.bool:
        return ("SUM", "MIN", "MAX", "BAND", "BOR", "BXOR")
    if dtype.is_complex:
        return ("SUM", "AVG", "PREMUL_SUM")
    if dtype.is_floating_point:
        return ("SUM", "AVG", "PRODUCT", "MIN", "MAX", "PREMUL_SUM")
    return ("SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR")


def values(dtype: torch.dtype, op: str, n: int, rank: int, salt: int = 0) -> torch.Tensor:
    """Rank `rank`'s input: every partial result of any op over <= 4 ranks is
    exact in `dtype` (products are powers of two, sums of quarters <= 20)."""
    i = torch.arange(n, dtype=torch.int64)
    k = (i * 7 + rank * 13 + salt * 5) % 41
    if dtype == torch.bool:
        return k % 3 == 0
    if op in ("BAND", "BOR", "BXOR"):
        return (k + i * 11 % 64).to(dtype)
    if op == "PRODUCT":
        table = torch.tensor([1.0, -2.0, 2.0, -1.0, 0.5, -0.5] if dtype.is_floating_point else [1, -2, 2, -1])
        if dtype == torch.uint8:
            table = torch.tensor([1, 2, 1])
        return table[k % len(table)].to(dtype)
    if dtype == torch.uint8:
        return (k % 30).to(dtype)
    x = (k - 20).to(torch.float64)
    if dtype.is_floating_point or dtype.is_complex:
        x = x / 4
    return x.to(dtype)


def reference(dtype: torch.dtype, op: str, n: int, ws: int, salt: int = 0, factor: float = 0.5) -> torch.Tensor:
    """The reduction over every rank's input (wide arithmetic, then cast)."""
    xs = [values(dtype, op, n, r, salt) for r in range(ws)]
    if dtype == torch.bool:
        x = torch.stack(xs)
        out = {"SUM": x.any(0), "MAX": x.any(0), "BOR": x.any(0), "MIN": x.all(0), "BAND": x.all(0),
               "BXOR": x.sum(0) % 2 == 1}[op]
        return out
    wide = torch.stack([x.to(torch.complex128 if dtype.is_complex else
                             torch.float64 if dtype.is_floating_point else torch.int64) for x in xs])
    if op == "PREMUL_SUM":
        out = torch.stack([x * factor for x in xs]).to(wide.dtype).sum(0)
    elif op in ("SUM", "AVG"):
        out = wide.sum(0)
        if op == "AVG":
            out = out / ws if (dtype.is_floating_point or dtype.is_complex) else torch.div(out, ws, rounding_mode="trunc")
    elif op == "PRODUCT":
        out = wide.prod(0)
    elif op == "MIN":
        out = wide.min(0).values
    elif op == "MAX":
        out = wide.max(0).values
    else:
        acc = wide[0]
        for x in wide[1:]:
            acc = {"BAND": acc & x, "BOR": acc | x, "BXOR": acc ^ x}[op]
        out = acc
    return out.to(dtype)


def reduce_op(op: str, factor: float = 0.5):
    return dist._make_nccl_premul_sum(factor) if op == "PREMUL_SUM" else getattr(dist.ReduceOp, op)


def gloo_reduced(x: torch.Tensor, op: str, ws: int, gloo, factor: float = 0.5) -> torch.Tensor | None:
    """Gloo's all_reduce of x (a copy) under op; AVG on integers and PREMUL_SUM
    through Gloo's SUM. None where Gloo has no kernel (int16)."""
    g = x.clone()
    try:
        if op == "PREMUL_SUM":
            g = g * factor
            dist.all_reduce(g, op=dist.ReduceOp.SUM, group=gloo)
        elif op == "AVG" and not (g.dtype.is_floating_point or g.dtype.is_complex):
            dist.all_reduce(g, op=dist.ReduceOp.SUM, group=gloo)
            g = torch.div(g, ws, rounding_mode="trunc")
        else:
            dist.all_reduce(g, op=getattr(dist.ReduceOp, op), group=gloo)
    except RuntimeError as e:
        if "Invalid scalar type" in str(e):
            return None
        raise
    return g


def check(got: torch.Tensor, want: torch.Tensor, what: str, op: str = "SUM") -> None:
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if op == "AVG" and (got.dtype.is_floating_point or got.dtype.is_complex):
        eps = torch.finfo(got.real.dtype if got.is_complex() else got.dtype).eps
        g, w = torch.view_as_real(got.to(torch.complex128)), torch.view_as_real(want.to(torch.complex128))
        bad = ((g - w).abs() > eps * (1 + w.abs())).nonzero()
    else:
        bad = (got != want).nonzero()
    if len(bad):
        j = tuple(bad[0].tolist())[: got.dim()]
        raise AssertionError(f"{what}: {len(bad)} elements differ; first at {j}: got {got[j]}, want {want[j]}")
