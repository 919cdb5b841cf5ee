"""The collectives beyond all_reduce/broadcast/all_gather give Gloo's result.

reduce_scatter (list, tensor, coalesced), all_gather_into_tensor coalesced,
all_to_all (list and single, with and without split sizes), reduce, gather,
scatter, and all_reduce on the recursive-doubling path, for 2, 3 and 4 ranks.
Each world size starts one world (the default group is distx, a second group
over the same ranks is Gloo) and runs every case in it; each case is its own
pytest item. Inputs are closed-form and exact in every dtype, so results are
compared exactly; AVG on floating types allows one rounding. Where Gloo lacks
an op (AVG on integers, PREMUL_SUM, int16) the oracle is Gloo's SUM on the
same inputs, scaled, or a reference computed from every rank's input.
Point-to-point, object collectives, sub-groups and bad arguments live in
test_p2p_groups.py.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.distributed as dist

from distx_oracle import ALL_DTYPES, check, gloo_reduced, ops_for, reduce_op, reference, values
from distx_testing import CaseTable, run_ranks

WORLD_SIZES = (2, 3, 4)
PRIME = 101


def _counts(ws: int) -> list[int]:
    return sorted({0, 1, ws - 1, ws + 1, PRIME})


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------- cases
# A case is fn(rank, ws, gloo_group) that raises AssertionError on a mismatch.

Case = Callable[[int, int, object], None]


def _reduce_scatter_tensor_case(dtype: torch.dtype, op: str, n: int) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        x = values(dtype, op, ws * n, rank)
        keep = x.clone()
        out = torch.zeros(n, dtype=dtype)
        dist.reduce_scatter_tensor(out, x, op=reduce_op(op))
        check(x, keep, "the input was modified")
        mine = slice(rank * n, (rank + 1) * n)
        check(out, reference(dtype, op, ws * n, ws)[mine], "distx vs reference", op)
        g = gloo_reduced(keep, op, ws, gloo)
        if g is not None:
            check(out, g[mine], "distx vs gloo", op)
    return run


def _reduce_scatter_list_case(dtype: torch.dtype, op: str) -> Case:
    """List form with non-contiguous inputs and output; also the 2-D output form."""
    def run(rank: int, ws: int, gloo) -> None:
        n = 12
        full = values(dtype, op, ws * n, rank)
        ins = [full[r * n:(r + 1) * n].view(3, 4).t() for r in range(ws)]  # transposed views
        holder = torch.zeros(4, 6, dtype=dtype)
        out = holder[:, ::2]  # (4, 3), strided
        dist.reduce_scatter(out, ins, op=reduce_op(op))
        want = reference(dtype, op, ws * n, ws)[rank * n:(rank + 1) * n].view(3, 4).t()
        check(out, want, "strided output vs reference", op)
        check(holder[:, 1::2], torch.zeros(4, 3, dtype=dtype), "reduce_scatter wrote outside the view")
        g = gloo_reduced(full, op, ws, gloo)
        if g is not None:
            check(out, g[rank * n:(rank + 1) * n].view(3, 4).t(), "distx vs gloo", op)
    return run


def _reduce_scatter_coalesced_case(op: str) -> Case:
    """_coalescing_manager over reduce_scatter_tensor: mixed dtypes and sizes (FSDP2's pattern)."""
    def run(rank: int, ws: int, gloo) -> None:
        specs = [(torch.float32, 5), (torch.bfloat16, 0), (torch.float64, 1), (torch.float32, PRIME),
                 (torch.bfloat16, ws + 1)]
        ins = [values(dt, op, ws * n, rank, salt=j) for j, (dt, n) in enumerate(specs)]
        outs = [torch.zeros(n, dtype=dt) for dt, n in specs]
        with dist._coalescing_manager(async_ops=True) as cm:
            for o, i in zip(outs, ins):
                dist.reduce_scatter_tensor(o, i, op=reduce_op(op))
        cm.wait()
        for j, ((dt, n), o) in enumerate(zip(specs, outs)):
            mine = slice(rank * n, (rank + 1) * n)
            check(o, reference(dt, op, ws * n, ws, salt=j)[mine], f"tensor {j} vs reference", op)
            g = gloo_reduced(ins[j], op, ws, gloo)
            check(o, g[mine], f"tensor {j} vs gloo", op)
    return run


def _all_gather_coalesced_case(rank: int, ws: int, gloo) -> None:
    """_coalescing_manager over all_gather_into_tensor; mixed element sizes put
    later tensors at offsets that are not multiples of their element size."""
    specs = [(torch.int8, 3), (torch.float32, 7), (torch.bool, 0), (torch.float64, 1), (torch.int16, PRIME)]
    ins = [values(dt, "SUM", n, rank, salt=j) for j, (dt, n) in enumerate(specs)]
    outs = [torch.full((ws * n,), 1, dtype=dt) for dt, n in specs]
    outs[1] = torch.zeros(ws * 7, 2)[:, 1]  # a strided output
    with dist._coalescing_manager(async_ops=True) as cm:
        for o, i in zip(outs, ins):
            dist.all_gather_into_tensor(o, i)
    cm.wait()
    for j, ((dt, n), o) in enumerate(zip(specs, outs)):
        want = torch.cat([values(dt, "SUM", n, r, salt=j) for r in range(ws)])
        check(o, want, f"tensor {j} vs inputs")
        if dt != torch.int16:
            g = torch.zeros(ws * n, dtype=dt)
            dist.all_gather_into_tensor(g, ins[j], group=gloo)
            check(o, g, f"tensor {j} vs gloo")


def _all_gather_coalesced_list_case(rank: int, ws: int, gloo) -> None:
    """all_gather_coalesced (list form) with mixed element sizes and a strided
    output: packed into one byte block per rank like the tensor form. torch's
    dist.all_gather_coalesced refuses mixed dtypes, so the backend is called
    directly; then the public call with one dtype."""
    specs = [(torch.int8, 3), (torch.float32, (2, 5)), (torch.float64, 1), (torch.int16, PRIME)]
    ins = [values(dt, "SUM", int(torch.Size(n if isinstance(n, tuple) else (n,)).numel()), rank, salt=j)
           .view(n if isinstance(n, tuple) else (n,)) for j, (dt, n) in enumerate(specs)]
    outs = [[torch.empty_like(t) for t in ins] for _ in range(ws)]
    outs[0][1] = torch.zeros(5, 2).t()  # a strided output
    dist.group.WORLD._get_backend(torch.device("cpu")).allgather_coalesced(outs, ins).wait()
    for src in range(ws):
        for j, (dt, n) in enumerate(specs):
            want = values(dt, "SUM", ins[j].numel(), src, salt=j).view(ins[j].shape)
            check(outs[src][j], want, f"rank {src}'s tensor {j}")
    same = [torch.full((3,), float(rank)), torch.full((2, 2), float(rank) + 0.5)]
    got = [[torch.empty_like(t) for t in same] for _ in range(ws)]
    dist.all_gather_coalesced(got, same)
    for src in range(ws):
        check(got[src][0], torch.full((3,), float(src)), f"public call, rank {src}'s tensor 0")
        check(got[src][1], torch.full((2, 2), float(src) + 0.5), f"public call, rank {src}'s tensor 1")


def _all_to_all_single_case(dtype: torch.dtype, uneven: bool, rows: int) -> Case:
    """Equal splits or uneven ones (zeros included), rows of `rows` elements."""
    def run(rank: int, ws: int, gloo) -> None:
        def split(src: int, dst: int) -> int:  # rows src sends to dst
            return (src * 3 + dst * 5) % 4 if uneven else 2
        in_splits = [split(rank, d) for d in range(ws)]
        out_splits = [split(s, rank) for s in range(ws)]
        x = values(dtype, "SUM", sum(in_splits) * rows, rank).view(-1, rows)
        out = torch.full((sum(out_splits), rows), 1, dtype=dtype)
        g = out.clone()
        kw = dict(output_split_sizes=out_splits, input_split_sizes=in_splits) if uneven else {}
        dist.all_to_all_single(out, x, **kw)
        if dtype in (torch.int16, torch.complex64, torch.complex128, torch.bool):
            return check(out, _a2a_reference(dtype, split, rank, ws, rows), "distx vs reference")
        dist.all_to_all_single(g, x, group=gloo, **kw)
        check(out, g, "distx vs gloo")
        check(out, _a2a_reference(dtype, split, rank, ws, rows), "distx vs reference")
    return run


def _a2a_reference(dtype, split, rank, ws, rows):
    parts = []
    for s in range(ws):
        sx = values(dtype, "SUM", sum(split(s, d) for d in range(ws)) * rows, s).view(-1, rows)
        start = sum(split(s, d) for d in range(rank))
        parts.append(sx[start:start + split(s, rank)])
    return torch.cat(parts)


def _all_to_all_list_case(rank: int, ws: int, gloo) -> None:
    """List form with a different size per peer, empty and non-contiguous tensors."""
    def n(src: int, dst: int) -> int:
        return (src * 2 + dst * 3) % 5
    ins = [values(torch.float32, "SUM", n(rank, d) * 2, rank, salt=d).view(2, -1) for d in range(ws)]
    ins = [t.t() for t in ins]  # non-contiguous where more than one column
    outs = [torch.zeros(n(s, rank), 2) for s in range(ws)]
    dist.all_to_all(outs, ins)
    for s in range(ws):
        want = values(torch.float32, "SUM", n(s, rank) * 2, s, salt=rank).view(2, -1).t()
        check(outs[s], want, f"block from {s} vs sender's input")
    # Gloo's list form needs one size for every peer: compare on that shape.
    ins = [values(torch.int64, "SUM", 6, rank, salt=d).view(2, 3) for d in range(ws)]
    outs, gouts = [torch.zeros(2, 3, dtype=torch.int64) for _ in range(ws)], [torch.zeros(2, 3, dtype=torch.int64) for _ in range(ws)]
    dist.all_to_all(outs, ins)
    dist.all_to_all(gouts, ins, group=gloo)
    for s in range(ws):
        check(outs[s], gouts[s], f"equal blocks: block from {s} vs gloo")


def _all_to_all_in_place_case(rank: int, ws: int, gloo) -> None:
    t = values(torch.int64, "SUM", ws * 3, rank)
    want = torch.empty_like(t)
    dist.all_to_all_single(want, t.clone(), group=gloo)
    dist.all_to_all_single(t, t)
    check(t, want, "in-place all_to_all_single vs gloo")


def _reduce_case(dtype: torch.dtype, op: str) -> Case:
    def run(rank: int, ws: int, gloo) -> None:
        for root in range(ws):
            for n in (0, 1, PRIME):
                t = values(dtype, op, n, rank, salt=root)
                keep = t.clone()
                dist.reduce(t, dst=root, op=reduce_op(op))
                if rank != root:
                    check(t, keep, f"root {root} n={n}: a non-root tensor changed")
                    gloo_reduced(keep, op, ws, gloo)  # keep Gloo's collectives in step
                    continue
                check(t, reference(dtype, op, n, ws, salt=root), f"root {root} n={n} vs reference", op)
                g = gloo_reduced(keep, op, ws, gloo)
                if g is not None:
                    check(t, g, f"root {root} n={n} vs gloo", op)
    return run


def _gather_scatter_case(dtype: torch.dtype, n: int) -> Case:
    use_gloo = not dtype.is_complex  # Gloo gathers no complex tensors

    def run(rank: int, ws: int, gloo) -> None:
        for root in range(ws):
            x = values(dtype, "SUM", n, rank, salt=root)
            outs = [torch.ones(n, dtype=dtype) for _ in range(ws)] if rank == root else None
            gouts = [torch.zeros(n, dtype=dtype) for _ in range(ws)] if rank == root else None
            dist.gather(x, outs, dst=root)
            if use_gloo:
                dist.gather(x, gouts, dst=root, group=gloo)
            if rank == root:
                for r in range(ws):
                    check(outs[r], values(dtype, "SUM", n, r, salt=root), f"gather root {root} block {r}")
                    if use_gloo:
                        check(outs[r], gouts[r], f"gather root {root} block {r} vs gloo")
            ins = [values(dtype, "SUM", n, r, salt=7) for r in range(ws)] if rank == root else None
            out = torch.ones(n, dtype=dtype)
            gout = torch.zeros(n, dtype=dtype)
            dist.scatter(out, ins, src=root)
            check(out, values(dtype, "SUM", n, rank, salt=7), f"scatter root {root}")
            if use_gloo:
                dist.scatter(gout, ins, src=root, group=gloo)
                check(out, gout, f"scatter root {root} vs gloo")
    return run


def _rooted_non_contiguous_case(rank: int, ws: int, gloo) -> None:
    base = values(torch.float64, "SUM", 60, rank).view(6, 10)
    view = base[::2, 1::3]
    g = view.contiguous()
    dist.reduce(view, dst=ws - 1)
    dist.reduce(g, dst=ws - 1, group=gloo)
    if rank == ws - 1:
        check(view, g, "strided reduce vs gloo")
    holders = [torch.full((4, 5), -1.0) for _ in range(ws)]
    outs = [h[:, 1:4] for h in holders] if rank == 0 else None
    dist.gather(values(torch.float32, "SUM", 12, rank).view(3, 4).t(), outs, dst=0)
    if rank == 0:
        for r in range(ws):
            check(outs[r], values(torch.float32, "SUM", 12, r).view(3, 4).t(), f"strided gather block {r}")
            assert (holders[r][:, 0] == -1).all() and (holders[r][:, 4] == -1).all(), "gather wrote outside"
    holder = torch.full((3, 8), -1.0)
    out = holder[:, ::2]
    ins = [values(torch.float32, "SUM", 12, r).view(4, 3).t() for r in range(ws)] if rank == 1 else None
    dist.scatter(out, ins, src=1)
    check(out, values(torch.float32, "SUM", 12, rank).view(4, 3).t(), "strided scatter")
    assert (holder[:, 1::2] == -1).all(), "scatter wrote outside the view"


def _small_all_reduce_case(dtype: torch.dtype, op: str) -> Case:
    """Sizes the selector sends to recursive doubling (and one just past it)."""
    def run(rank: int, ws: int, gloo) -> None:
        for n in (1, ws + 1, PRIME, 9000):
            t = values(dtype, op, n, rank)
            g = gloo_reduced(t, op, ws, gloo)
            dist.all_reduce(t, op=reduce_op(op))
            check(t, reference(dtype, op, n, ws), f"n={n} vs reference", op)
            check(t, g, f"n={n} vs gloo", op)
    return run


def cases(ws: int) -> dict[str, Case]:
    c: dict[str, Case] = {}
    for dt in ALL_DTYPES:
        for op in ops_for(dt):
            for n in _counts(ws):
                c[f"reduce_scatter_tensor-{_dt(dt)}-{op}-n{n}"] = _reduce_scatter_tensor_case(dt, op, n)
            c[f"reduce-{_dt(dt)}-{op}"] = _reduce_case(dt, op)
    c["reduce_scatter_tensor-float32-SUM-n30011"] = _reduce_scatter_tensor_case(torch.float32, "SUM", 30011)
    for dt, op in ((torch.float32, "SUM"), (torch.bfloat16, "AVG"), (torch.int64, "MAX"), (torch.float64, "PREMUL_SUM")):
        c[f"reduce_scatter_list-{_dt(dt)}-{op}"] = _reduce_scatter_list_case(dt, op)
    for op in ("SUM", "AVG", "PREMUL_SUM"):
        c[f"reduce_scatter_tensor_coalesced-{op}"] = _reduce_scatter_coalesced_case(op)
    c["all_gather_into_tensor_coalesced"] = _all_gather_coalesced_case
    c["all_gather_coalesced_list"] = _all_gather_coalesced_list_case
    for dt in (torch.float32, torch.float16, torch.int8, torch.int16, torch.int64, torch.bool, torch.complex128):
        for uneven in (False, True):
            c[f"all_to_all_single-{_dt(dt)}-{'splits' if uneven else 'equal'}"] = _all_to_all_single_case(dt, uneven, 3)
    c["all_to_all_single-float32-splits-large"] = _all_to_all_single_case(torch.float32, True, 20011)
    c["all_to_all_list"] = _all_to_all_list_case
    c["all_to_all_single_in_place"] = _all_to_all_in_place_case
    for dt in (torch.float32, torch.bfloat16, torch.uint8, torch.bool, torch.complex64):
        for n in (0, 1, PRIME):
            c[f"gather_scatter-{_dt(dt)}-n{n}"] = _gather_scatter_case(dt, n)
    c["rooted_non_contiguous"] = _rooted_non_contiguous_case
    for dt, op in ((torch.float32, "SUM"), (torch.float64, "MIN"), (torch.bfloat16, "AVG"), (torch.int32, "PRODUCT"),
                   (torch.int64, "BXOR"), (torch.float16, "MAX"), (torch.float32, "PREMUL_SUM")):
        c[f"all_reduce_small-{_dt(dt)}-{op}"] = _small_all_reduce_case(dt, op)
    return c


_TABLE = CaseTable(cases, timeout=150, pg_timeout=60)
_PARAMS = _TABLE.params(WORLD_SIZES)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("ws,name", _PARAMS)
def test_collective_matches_gloo(ws: int, name: str) -> None:
    _TABLE.check(ws, name)


def _forced_algorithm(rank: int, ws: int) -> list[str]:
    """all_reduce of every size on the algorithm DISTX_ALGO forces, vs Gloo."""
    gloo = dist.new_group(backend="gloo")
    bad = []
    for dt, op in ((torch.float32, "SUM"), (torch.float64, "MIN"), (torch.int64, "AVG"), (torch.bfloat16, "MAX")):
        for n in (0, 1, ws - 1, ws + 1, PRIME, 300_007):
            t = values(dt, op, n, rank)
            g = gloo_reduced(t, op, ws, gloo)
            dist.all_reduce(t, op=reduce_op(op))
            try:
                check(t, g, f"{_dt(dt)} {op} n={n} vs gloo", op)
            except AssertionError as e:
                bad.append(str(e))
    return bad


@pytest.mark.timeout(120)
@pytest.mark.parametrize("algo,ws", [("recursive_doubling", 3), ("ring", 2)])
def test_distx_algo_forces_the_all_reduce_algorithm(algo: str, ws: int) -> None:
    per_rank = run_ranks(_forced_algorithm, ws, timeout=90, env={"DISTX_ALGO": algo})
    assert per_rank == [[]] * ws, per_rank
