"""Point-to-point, object collectives, sub-groups, monitored barrier, many
outstanding ops and bad arguments on distx, for 2, 3 and 4 ranks.

send/recv with tags, irecv posted before the matching isend on both ranks
(batch_isend_irecv: the backend's worker must not block on a receive),
recv from any source (Work.source_rank), non-contiguous and empty tensors;
all_gather_object / broadcast_object_list / gather_object /
scatter_object_list; the new collectives on sub-groups whose ranks are listed
out of order and that leave a rank out; two groups driven from two threads at
once; hundreds of async ops in flight; monitored_barrier naming the absent
rank; ValueError/TypeError for bad calls. One world per size runs every case.
"""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from typing import Callable

import pytest
import torch
import torch.distributed as dist

from distx_oracle import check, reference, values
from distx_testing import CaseTable, run_ranks_raw

WORLD_SIZES = (2, 3, 4)
Case = Callable[[int, int, object], None]


def _pg():
    return dist.distributed_c10d._get_default_group()


# ---------------------------------------------------------------- point-to-point

def _send_recv_tags_case(rank: int, ws: int, gloo) -> None:
    """Two messages to one peer with different tags, received in the other order."""
    if rank == 0:
        for dst in range(1, ws):
            a, b = dist.isend(torch.full((5,), 1.0 + dst), dst, tag=7), dist.isend(torch.full((3,), -1.0), dst, tag=9)
            a.wait()
            b.wait()
    else:
        y, x = torch.zeros(3), torch.zeros(5)
        dist.recv(y, 0, tag=9)
        dist.recv(x, 0, tag=7)
        check(x, torch.full((5,), 1.0 + rank), "tag 7 message")
        check(y, torch.full((3,), -1.0), "tag 9 message")


def _batch_ring_case(rank: int, ws: int, gloo) -> None:
    """batch_isend_irecv both ways around the ring, irecv first, several dtypes."""
    right, left = (rank + 1) % ws, (rank - 1) % ws
    for dt, n in ((torch.float32, 1), (torch.int64, 10007), (torch.bfloat16, 0), (torch.bool, 33), (torch.float64, 300_001)):
        from_left, from_right = torch.zeros(n, dtype=dt), torch.zeros(n, dtype=dt)
        ops = [dist.P2POp(dist.irecv, from_left, left), dist.P2POp(dist.irecv, from_right, right),
               dist.P2POp(dist.isend, values(dt, "SUM", n, rank), right),
               dist.P2POp(dist.isend, values(dt, "SUM", n, rank, salt=1), left)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        check(from_left, values(dt, "SUM", n, left), f"{dt} from left")
        check(from_right, values(dt, "SUM", n, right, salt=1), f"{dt} from right")


def _p2p_non_contiguous_case(rank: int, ws: int, gloo) -> None:
    if rank == 0:
        src = values(torch.float64, "SUM", 40, 0).view(5, 8)
        for dst in range(1, ws):
            dist.send(src[:, ::2], dst)
            dist.send(torch.zeros(0), dst)
    else:
        holder = torch.full((4, 10), -1.0, dtype=torch.float64)
        dist.recv(holder[:, 1:6].t(), 0)  # (5, 4), strided
        check(holder[:, 1:6].t(), values(torch.float64, "SUM", 40, 0).view(5, 8)[:, ::2], "strided recv")
        assert (holder[:, 0] == -1).all() and (holder[:, 6:] == -1).all(), "recv wrote outside the view"
        dist.recv(torch.zeros(0), 0)


def _recv_any_source_posted_first_case(rank: int, ws: int, gloo) -> None:
    """irecv(src=None) posted before the senders send: the source comes from the match."""
    if rank == 0:
        bufs = [torch.zeros(2) for _ in range(ws - 1)]
        works = [dist.irecv(b, tag=1001) for b in bufs]
        dist.barrier(group=gloo)
        seen = {}
        for w, b in zip(works, bufs):
            w.wait()
            seen[w._source_rank()] = b[0].item()
        assert seen == {r: float(r) for r in range(1, ws)}, seen
    else:
        dist.barrier(group=gloo)
        dist.send(torch.full((2,), float(rank)), 0, tag=1001)


def _recv_any_source_arrived_first_case(rank: int, ws: int, gloo) -> None:
    """A receive from any source posted after every message has arrived (it
    completes at once, inside the post): it must still name each sender.
    Reproduces a UcxTransport bug: UCX 1.13 leaves recv_info unfilled on
    immediate completion, so source() reads 0 and receivedBytes() 0."""
    if rank != 0:
        dist.send(torch.full((2,), float(rank)), 0, tag=1002)
    time.sleep(0.2)
    dist.barrier(group=gloo)
    seen, src = [], None
    if rank == 0:
        for _ in range(ws - 1):  # irecv: collects every message even when the sources are wrong
            b = torch.zeros(2)
            w = dist.irecv(b, tag=1002)
            w.wait()
            seen.append((w._source_rank(), b[0].item()))
    if rank == ws - 1:  # and dist.recv's return value, on a message that is already there
        dist.send(torch.ones(1), 0, tag=1003)
    time.sleep(0.2)
    dist.barrier(group=gloo)
    if rank == 0:
        w = dist.irecv(torch.zeros(1), tag=1003)
        w.wait()
        src = w._source_rank()
        assert sorted(seen) == [(r, float(r)) for r in range(1, ws)], f"(source, payload) pairs: {seen}"
        assert src == ws - 1, f"source of the second message: {src}"


def _many_outstanding_case(rank: int, ws: int, gloo) -> None:
    """300 isend/irecv pairs and 100 async collectives in flight at once."""
    right, left = (rank + 1) % ws, (rank - 1) % ws
    recvs = [torch.zeros(3) for _ in range(300)]
    works = [dist.irecv(b, left, tag=i) for i, b in enumerate(recvs)]
    colls = [torch.full((7,), float(rank + i)) for i in range(100)]
    works += [dist.all_reduce(t, async_op=True) for t in colls]
    works += [dist.isend(torch.full((3,), float(rank * 1000 + i)), right, tag=i) for i in range(300)]
    for w in works:
        w.wait()
    for i, b in enumerate(recvs):
        check(b, torch.full((3,), float(left * 1000 + i)), f"p2p message {i}")
    base = ws * (ws - 1) / 2
    for i, t in enumerate(colls):
        check(t, torch.full((7,), base + ws * i), f"all_reduce {i}")


def _p2p_pending_at_destroy_case(rank: int, ws: int, gloo) -> None:
    """An irecv that nothing matches fails (does not hang) once its group is destroyed."""
    g = dist.new_group(list(range(ws)), backend="distx")
    w = dist.irecv(torch.zeros(2), (rank + 1) % ws, group=g, tag=123)
    dist.destroy_process_group(g)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="shut down|destroyed"):
        w.wait()
    assert time.monotonic() - t0 < 10


# ---------------------------------------------------------------- objects, groups, threads

def _object_collectives_case(rank: int, ws: int, gloo) -> None:
    mine = {"rank": rank, "blob": "x" * (rank * 500 + 1), "t": torch.arange(rank + 2)}
    objs = [None] * ws
    dist.all_gather_object(objs, mine)
    assert [o["rank"] for o in objs] == list(range(ws)) and objs[ws - 1]["t"].tolist() == list(range(ws + 1))
    lst = [rank, f"s{rank}", None] if rank == 1 else [None, None, None]
    dist.broadcast_object_list(lst, src=1)
    assert lst == [1, "s1", None], lst
    got = [None] * ws if rank == ws - 1 else None
    dist.gather_object(("g", rank, [rank] * rank), got, dst=ws - 1)
    if rank == ws - 1:
        assert got == [("g", r, [r] * r) for r in range(ws)], got
    out = [None]
    dist.scatter_object_list(out, [{"to": r, "pad": "y" * r * 300} for r in range(ws)] if rank == 0 else None, src=0)
    assert out[0]["to"] == rank and len(out[0]["pad"]) == rank * 300, out


def _subgroup_case(rank: int, ws: int, gloo) -> None:
    """A group listed out of order, without rank 1 when ws > 2; global ranks in the API."""
    members = [ws - 1, 0] if ws > 2 else [1, 0]
    g = dist.new_group(members, backend="distx")
    gg = dist.new_group(members, backend="gloo")
    if rank not in members:
        assert dist.get_rank(g) == -1
        return
    gr, gs = dist.get_rank(g), 2
    x = values(torch.float32, "SUM", 2 * 5, gr)
    out = torch.zeros(5)
    dist.reduce_scatter_tensor(out, x, op=dist.ReduceOp.AVG, group=g)
    check(out, reference(torch.float32, "AVG", 10, gs)[gr * 5:(gr + 1) * 5], "sub-group reduce_scatter AVG", "AVG")
    inp = values(torch.int64, "SUM", 6, rank)
    splits = [1, 5] if gr == 0 else [4, 2]  # rows to group rank 0, 1
    out_splits = [1, 4] if gr == 0 else [5, 2]  # rows from group rank 0, 1
    a, b = torch.zeros(sum(out_splits), dtype=torch.int64), torch.zeros(sum(out_splits), dtype=torch.int64)
    dist.all_to_all_single(a, inp, out_splits, splits, group=g)
    dist.all_to_all_single(b, inp, out_splits, splits, group=gg)
    check(a, b, "sub-group all_to_all_single vs gloo")
    t = values(torch.int32, "MAX", 9, rank)
    tg = t.clone()
    dist.reduce(t, dst=ws - 1, op=dist.ReduceOp.MAX, group=g)
    dist.reduce(tg, dst=ws - 1, op=dist.ReduceOp.MAX, group=gg)
    if rank == ws - 1:
        check(t, tg, "sub-group reduce vs gloo")
    outs = [torch.zeros(4) for _ in members] if rank == 0 else None
    dist.gather(torch.full((4,), float(rank)), outs, dst=0, group=g)
    if rank == 0:
        assert [o[0].item() for o in outs] == [0.0, float(ws - 1)], outs  # group rank order
    peer = ws - 1 if rank == 0 else 0
    buf = torch.zeros(3)
    works = dist.batch_isend_irecv([dist.P2POp(dist.irecv, buf, peer, g), dist.P2POp(dist.isend, torch.full((3,), float(rank)), peer, g)])
    for w in works:
        w.wait()
    check(buf, torch.full((3,), float(peer)), "sub-group p2p")
    if rank == 0:  # posted before the message comes (see recv_any_source_arrived_first)
        assert dist.recv(buf, group=g) == ws - 1, "recv from any source must return the global rank"
    else:
        time.sleep(0.3)
        dist.send(buf, 0, group=g)
    dist.destroy_process_group(g)
    dist.destroy_process_group(gg)


def _threads_case(rank: int, ws: int, gloo) -> None:
    """Two distx groups driven at once from two threads."""
    groups = [dist.new_group(list(range(ws)), backend="distx") for _ in range(2)]
    errors: list[BaseException] = []

    def drive(k: int) -> None:
        try:
            for i in range(30):
                t = torch.full((1000 + k,), float(rank + i))
                dist.all_reduce(t, group=groups[k])
                check(t, torch.full((1000 + k,), float(ws * (ws - 1) / 2 + ws * i)), f"group {k} iteration {i}")
                out = torch.zeros(ws * 2)
                dist.all_to_all_single(out, torch.full((ws * 2,), float(rank)), group=groups[k])
                check(out, torch.arange(ws).repeat_interleave(2).float(), f"group {k} all_to_all {i}")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=drive, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    for g in groups:
        dist.destroy_process_group(g)
    if errors:
        raise errors[0]


def _monitored_barrier_case(rank: int, ws: int, gloo) -> None:
    """Passes when everyone comes; with a rank missing, rank 0 names it."""
    _pg().monitored_barrier(datetime.timedelta(seconds=10), True)
    g = dist.new_group(list(range(ws)), backend="distx")
    absent = ws - 1
    if rank != absent:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as info:
            g.monitored_barrier(datetime.timedelta(seconds=1), True)
        assert time.monotonic() - t0 < 8
        if rank == 0:
            assert f"Rank {absent} failed to pass monitoredBarrier" in str(info.value), str(info.value)
    dist.barrier(group=gloo)
    dist.destroy_process_group(g)


# ---------------------------------------------------------------- bad arguments

def _raises(exc, match: str, fn) -> None:
    with pytest.raises(exc, match=match):
        fn()


def _bad_arguments_case(rank: int, ws: int, gloo) -> None:
    f = torch.zeros(4)
    _raises(ValueError, "elements", lambda: dist.reduce_scatter_tensor(torch.zeros(3), torch.zeros(3 * ws + 1)))
    _raises(TypeError, "dtype", lambda: dist.reduce_scatter_tensor(torch.zeros(2), torch.zeros(2 * ws, dtype=torch.float64)))
    _raises(TypeError, "BXOR", lambda: dist.reduce_scatter_tensor(torch.zeros(2), torch.zeros(2 * ws), op=dist.ReduceOp.BXOR))
    _raises(ValueError, "input list has", lambda: dist.reduce_scatter(f, [f] * (ws + 1)))
    _raises(ValueError, "split sizes add up", lambda: dist.all_to_all_single(torch.zeros(ws), torch.zeros(ws), [1] * ws, [2] * ws))
    _raises(ValueError, "does not divide", lambda: dist.all_to_all_single(torch.zeros(ws + 1), torch.zeros(ws + 1)))
    _raises(ValueError, "expected", lambda: dist.all_to_all([f] * ws, [f] * (ws + 1)))
    _raises((TypeError, ValueError), "dtype", lambda: dist.all_to_all([f] * ws, [f.long()] * ws))
    _raises(TypeError, "PREMUL_SUM", lambda: dist.reduce(torch.zeros(2, dtype=torch.int32), 0, op=dist._make_nccl_premul_sum(2.0)))
    if rank == 0:
        _raises(ValueError, "output list", lambda: dist.gather(f, [f] * (ws + 1), dst=0))
        _raises(ValueError, "elements", lambda: dist.scatter(f, [f] * (ws - 1) + [torch.zeros(5)], src=0))
        _raises((TypeError, ValueError), "dtype", lambda: dist.gather(f, [f.double()] * ws, dst=0))
    # A tensor on another device (meta: the only other one on a CPU-only
    # machine; torch's dispatcher would route it to a fake kernel, so the
    # backend object is called directly).
    b = _pg()._get_backend(torch.device("cpu"))
    meta = torch.zeros(2 * ws, device="meta")
    _raises(ValueError, "CPU", lambda: b._reduce_scatter_base(torch.zeros(2), meta))
    _raises(ValueError, "CPU", lambda: b.alltoall_base(torch.zeros(2 * ws), meta, [], []))
    _raises(ValueError, "CPU", lambda: b.reduce([meta]))
    _raises(ValueError, "CPU", lambda: b.send([meta], 0, 0))
    _raises(ValueError, "outside", lambda: _pg().send([f], ws, 0))
    _raises(ValueError, "outside", lambda: _pg().recv([f], -1, 0))
    _raises(ValueError, "exactly one tensor", lambda: _pg().send([f, f], 0, 0))
    dist.barrier()  # nothing above reached the wire: the group still works
    t = torch.ones(3)
    dist.all_reduce(t)
    check(t, torch.full((3,), float(ws)), "all_reduce after the bad calls")


def cases(ws: int) -> dict[str, Case]:
    return {
        "send_recv_tags": _send_recv_tags_case,
        "batch_isend_irecv_ring": _batch_ring_case,
        "p2p_non_contiguous_and_empty": _p2p_non_contiguous_case,
        "recv_any_source_posted_first": _recv_any_source_posted_first_case,
        "recv_any_source_arrived_first": _recv_any_source_arrived_first_case,
        "many_outstanding": _many_outstanding_case,
        "p2p_pending_at_destroy": _p2p_pending_at_destroy_case,
        "object_collectives": _object_collectives_case,
        "subgroup": _subgroup_case,
        "threads": _threads_case,
        "bad_arguments": _bad_arguments_case,
        "monitored_barrier": _monitored_barrier_case,  # last: it desynchronises a group on purpose
    }


_TABLES = {store: CaseTable(cases, isolate=True, timeout=120, pg_timeout=30, store=store) for store in ("file", "tcp")}
_PARAMS = [pytest.param(ws, name, id=f"P{ws}-{name}") for ws in WORLD_SIZES for name in cases(ws)]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("ws,name", _PARAMS)
def test_p2p_and_groups(ws: int, name: str) -> None:
    _TABLES["tcp" if ws == 3 else "file"].check(ws, name)


def _dead_peer_worker(rank: int, ws: int) -> object:
    w = dist.irecv(torch.zeros(4), 1, tag=5) if rank == 0 else None
    dist.barrier()
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    try:
        w.wait()
        return "completed"
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, str(e), time.monotonic() - t0)


@pytest.mark.timeout(90)
def test_pending_recv_fails_when_the_peer_dies() -> None:
    """A peer killed with SIGKILL: the pending irecv fails with an error naming it
    (not after the 30 s group timeout, and not a hang)."""
    results = run_ranks_raw(_dead_peer_worker, 2, timeout=60, pg_timeout=30, grace=40)
    assert results[0].ok, results[0]
    name, msg, elapsed = results[0].value
    assert name == "DistBackendError", (name, msg)
    assert "rank 1" in msg and "recv" in msg, msg
    assert elapsed < 20, f"detected after {elapsed:.1f} s: {msg}"
