"""What a user debugging a job sees: profiler events, TORCH_DISTRIBUTED_DEBUG=DETAIL,
and torch_distx.monitored_barrier, each compared with gloo where gloo has it."""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist

from distx_testing import current_store, run_ranks

pytestmark = pytest.mark.timeout(180)


def _profile_worker(rank: int, ws: int) -> list[tuple[str, list]]:
    backend = dist.get_backend()
    with torch.autograd.profiler.profile(record_shapes=True) as prof:
        t = torch.ones(5, 3)
        dist.all_reduce(t)
        outs = [torch.empty(4) for _ in range(ws)]
        dist.all_gather(outs, torch.full((4,), float(rank)))
        dist.broadcast(torch.zeros(2, dtype=torch.complex64), src=0)
        if rank == 0:
            dist.send(torch.ones(7), 1)
        elif rank == 1:
            dist.recv(torch.empty(7))  # any source
        dist.barrier()
    prefix = f"{backend}:"
    return sorted((e.name[len(prefix):], e.input_shapes) for e in prof.function_events
                  if e.name.startswith(prefix) and e.is_async)


def test_profiler_events_match_gloo() -> None:
    """Each op is one async profiler event "distx:<op>" recording the op's
    input shapes, the same set gloo records as "gloo:<op>"."""
    ref = run_ranks(_profile_worker, 2, backend="gloo")
    got = run_ranks(_profile_worker, 2)
    for rank in range(2):
        names = [name for name, _ in got[rank]]
        assert {"all_reduce", "all_gather", "broadcast", "barrier"} <= set(names), names
        assert ("send" if rank == 0 else "recvAnySource") in names, names
        shapes = dict(got[rank])
        assert shapes["all_reduce"] == [[5, 3]]
        assert shapes["all_gather"] == [[4]]
        assert shapes["broadcast"] == [[2, 2]]  # complex recorded as its real view, as gloo does
        common = set(names) & {name for name, _ in ref[rank]}
        assert {(n, str(s)) for n, s in got[rank] if n in common} == \
            {(n, str(s)) for n, s in ref[rank] if n in common}


def _detail_worker(rank: int, ws: int) -> dict:
    # torch wraps every group in its debug wrapper (a gloo helper group checks
    # each collective's op and shapes across ranks before it runs).
    group = dist.new_group(list(range(ws)))
    t = torch.full((3,), float(rank))
    dist.all_reduce(t, group=group)
    try:
        dist.all_reduce(torch.ones(3 + rank), group=group)  # shapes differ across ranks
        mismatch = None
    except RuntimeError as e:
        mismatch = str(e)
    return {"sum": t.tolist(), "mismatch": mismatch}


def test_torch_distributed_debug_detail_wraps_distx_groups() -> None:
    results = run_ranks(_detail_worker, 2, env={"TORCH_DISTRIBUTED_DEBUG": "DETAIL"}, pg_timeout=20)
    for out in results:
        assert out["sum"] == [1.0, 1.0, 1.0]
        assert out["mismatch"] is not None and "shape" in out["mismatch"].lower(), out["mismatch"]


def _monitored_worker(rank: int, ws: int, case: str) -> str | None:
    import torch_distx

    torch_distx.monitored_barrier(timeout=datetime.timedelta(seconds=10))  # everyone arrives
    try:
        if case == "absent":
            if rank != 1:
                torch_distx.monitored_barrier(timeout=datetime.timedelta(seconds=1))
        elif case == "zero" and rank == 0:
            dist.group.WORLD.monitored_barrier(datetime.timedelta(seconds=0))
    except RuntimeError as e:
        return str(e)
    finally:  # rank 1 stays until the others are done (the store: gloo's pairs may be closed now)
        store = current_store()
        store.set(f"monitored/{case}/{rank}", "1")
        store.wait([f"monitored/{case}/{r}" for r in range(ws)], datetime.timedelta(seconds=30))
    return None


@pytest.mark.parametrize("backend", ["gloo", "distx"])
def test_monitored_barrier_messages_match_gloo(backend: str) -> None:
    absent = run_ranks(_monitored_worker, 3, "absent", backend=backend, pg_timeout=30)
    assert "Rank 1 failed to pass monitoredBarrier" in absent[0], absent[0]
    assert absent[1] is None
    assert "Rank 2 successfully reached monitoredBarrier, but received errors while waiting for " \
           "send/recv from rank 0" in absent[2], absent[2]
    zero = run_ranks(_monitored_worker, 3, "zero", backend=backend, pg_timeout=30)
    assert "Rank 0 timed out in monitoredBarrier" in zero[0], zero[0]
