"""A process group's life after init: set_timeout, abort, split_group's refusal.

- ``Backend.set_timeout`` changes the deadline of the ops posted after it
  (torch's ``_set_pg_timeout`` only knows gloo and nccl, so users call the
  backend's method; see README "Timeouts").
- ``_abort_process_group`` fails every pending and queued op at once instead
  of letting it wait for its deadline, and the process exits cleanly.
- ``split_group`` is refused with torch's RuntimeError (distx reports
  supports_splitting = False; DeviceMesh then uses new_group) and the parent
  group stays usable.
"""

from __future__ import annotations

import datetime
import re
import time

import pytest
import torch
import torch.distributed as dist

from distx_testing import current_store, run_ranks, wait_all

pytestmark = pytest.mark.timeout(120)

WS = 3
ABSENT = WS - 1  # the rank that never joins


def _backend(group=None):
    return (group or dist.group.WORLD)._get_backend(torch.device("cpu"))


def _release_absent(rank: int) -> None:
    current_store().set(f"lifecycle/done/{rank}", "1")


def _wait_as_absent() -> None:
    keys = [f"lifecycle/done/{r}" for r in range(WS) if r != ABSENT]
    current_store().wait(keys, datetime.timedelta(seconds=60))


def _set_timeout_worker(rank: int, ws: int) -> dict:
    dist.all_reduce(torch.ones(2))  # the group works with the init timeout (60 s)
    _backend().set_timeout(datetime.timedelta(seconds=2))
    if rank == ABSENT:
        _wait_as_absent()
        return {}
    start = time.monotonic()
    try:
        dist.all_reduce(torch.ones(100))
        error = None
    except dist.DistBackendError as e:
        error = str(e)
    elapsed = time.monotonic() - start
    _release_absent(rank)
    return {"error": error, "elapsed": elapsed}


def test_set_timeout_applies_to_later_ops() -> None:
    results = run_ranks(_set_timeout_worker, WS, timeout=60, pg_timeout=60)
    for rank in range(WS - 1):
        out = results[rank]
        assert out["error"] is not None, f"rank {rank}: all_reduce succeeded without rank {ABSENT}"
        assert "Timed out" in out["error"] and "2000 ms" in out["error"], out["error"]
        assert 1.5 <= out["elapsed"] <= 7, f"rank {rank}: failed after {out['elapsed']:.1f}s, not ~2 s"


def _abort_worker(rank: int, ws: int, which: str) -> dict:
    group = dist.new_group(list(range(ws)), backend="distx") if which == "subgroup" else None
    dist.all_reduce(torch.ones(2), group=group)
    if rank == ABSENT:  # aborts too once the others are done, as a job tearing down after a failure would
        _wait_as_absent()
        dist.distributed_c10d._abort_process_group(group)
        return {}
    # Three ops in flight: the first waits on the absent rank, the others are
    # queued behind it, and an irecv nobody will match.
    works = [dist.all_reduce(torch.ones(1000), group=group, async_op=True) for _ in range(3)]
    works.append(dist.irecv(torch.zeros(4), src=ABSENT, group=group, tag=7))
    time.sleep(0.3)
    assert not any(w.is_completed() for w in works)
    start = time.monotonic()
    dist.distributed_c10d._abort_process_group(group)
    errors = wait_all(works)
    elapsed = time.monotonic() - start
    after = None
    if group is not None:  # the default group is untouched by a subgroup's abort
        t = torch.full((3,), float(rank))
        dist.all_reduce(t, group=dist.new_group([r for r in range(ws) if r != ABSENT], backend="distx"))
        after = t.tolist()
    _release_absent(rank)
    return {"errors": errors, "elapsed": elapsed, "after": after, "initialized": dist.is_initialized()}


@pytest.mark.parametrize("which", ["world", "subgroup"])
def test_abort_fails_pending_ops_at_once(which: str) -> None:
    start = time.monotonic()
    results = run_ranks(_abort_worker, WS, which, timeout=90, pg_timeout=60)
    total = time.monotonic() - start
    for rank in range(WS - 1):
        out = results[rank]
        for i, err in enumerate(out["errors"]):
            assert err is not None, f"rank {rank}: op {i} completed although its group was aborted"
            assert re.search("abort|shut down", err), f"rank {rank}: op {i}: {err}"
        assert out["elapsed"] < 5, f"rank {rank}: pending ops took {out['elapsed']:.1f}s to fail after abort"
        if which == "subgroup":
            assert out["after"] == [1.0, 1.0, 1.0], out["after"]
        else:
            assert out["initialized"] is False
    assert total < 45, f"the run took {total:.1f}s: teardown after abort must not wait for the 60 s timeout"


def _split_group_worker(rank: int, ws: int) -> dict:
    # On CPU torch refuses before asking the backend (split_group needs an
    # accelerator bound with init_process_group(device_id=...)); with one bound
    # it refuses because supports_splitting is False.
    backend = _backend()
    supports = backend.supports_splitting
    try:
        dist.split_group(split_ranks=[[0], list(range(1, ws))])
        error = None
    except RuntimeError as e:
        error = str(e)
    t = torch.full((2,), float(rank))
    dist.all_reduce(t)
    return {"supports": supports, "error": error, "after": t.tolist()}


def test_split_group_is_refused_and_group_stays_usable() -> None:
    results = run_ranks(_split_group_worker, 2, timeout=60)
    for out in results:
        assert out["supports"] is False
        assert out["error"] is not None, "split_group succeeded"
        assert re.search("does not support splitting|not safe to split", out["error"]), out["error"]
        assert out["after"] == [1.0, 1.0]
