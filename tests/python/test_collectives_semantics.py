"""Collective semantics beyond the values, each against Gloo or a torch
reference: async Works and their futures (wait, is_completed, .then chaining,
many in flight waited out of order, a .then that issues a collective),
non-contiguous and edge-shaped tensors, barrier ordering, object collectives,
sub-groups beside the default group, Works still pending at destroy, and an
aliased output list on one rank.

The cases run as test_collectives.py's do (one world per size, each case its
own pytest item) on the same closed-form inputs and oracles, imported from it.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist

from distx_testing import current_store, run_ranks
from test_collectives import (LARGE, PRIME, Case, CaseTables, _assert_close, _assert_equal, _eps, _reference,
                              _values)


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
    """Every semantics case for world size ws, by name (the pytest ids)."""
    return {"barrier": _barrier_case, "non_contiguous": _non_contiguous_case,
            "async_semantics": _async_semantics_case, "async_is_completed": _is_completed_case,
            "async_many_in_flight": _in_flight_case, "edge_shapes": _edge_shapes_case,
            "object_collectives": _object_collectives_case, "subgroups": _subgroups_case}


_TABLES = CaseTables(cases)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("ws,name", _TABLES.params)
def test_collective_matches_gloo(ws: int, name: str) -> None:
    _TABLES.check(ws, name)


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
