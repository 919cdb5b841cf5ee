"""A process group re-created on the same store (docs/design.md, "Process groups").

``init_process_group(store=s)``, ``destroy_process_group()``, then
``init_process_group(store=s)`` again: torch gives the new default group the
same name (and so the same store prefix) as the old one, so every key the
backend writes at init (UCX worker addresses, liveness addresses, teardown
barrier counters) would be read back from the previous incarnation unless the
keys carry an incarnation agreed through the store (Note [Store
incarnations]). Gloo is no oracle here: it reads the previous incarnation's
addresses too and fails these sequences now and then ("connectFullMesh ...
Connection refused", "Connection reset by peer"), so results are checked
against closed forms.
"""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist

from distx_testing import current_store, run_ranks

pytestmark = pytest.mark.timeout(120)

CYCLES = 3


def _cycles_worker(rank: int, ws: int, backend: str, with_subgroup: bool) -> list:
    store = current_store()
    sums = []
    for cycle in range(CYCLES):
        dist.init_process_group(backend, store=store, rank=rank, world_size=ws,
                                timeout=datetime.timedelta(seconds=30))
        t = torch.full((1000,), float(rank + 1 + cycle))
        dist.all_reduce(t)
        row = [t[0].item()]
        if with_subgroup:
            sub = dist.new_group([0, ws - 1], backend=backend)
            if rank in (0, ws - 1):
                s = torch.full((5,), float(rank * 10 + cycle))
                dist.all_reduce(s, group=sub)
                row.append(s[0].item())
        dist.barrier()
        dist.destroy_process_group()
        sums.append(row)
    return sums


def test_reinit_on_same_store_with_a_subgroup() -> None:
    """Three init/destroy cycles on one TCPStore, each with a sub-group of
    ranks 0 and ws-1; closed-form results."""
    ws = 3
    got = run_ranks(_cycles_worker, ws, "distx", True, backend=None, store="tcp", timeout=90)
    for rank in range(ws):
        for cycle, row in enumerate(got[rank]):
            assert row[0] == sum(r + 1 + cycle for r in range(ws)), (rank, cycle, row)
            if rank in (0, ws - 1):
                assert row[1] == (ws - 1) * 10 + 2 * cycle, (rank, cycle, row)


def test_reinit_world_only() -> None:
    """Three init/destroy cycles of the world group on one TCPStore."""
    ws = 2
    got = run_ranks(_cycles_worker, ws, "distx", False, backend=None, store="tcp", timeout=90)
    for rank in range(ws):
        assert [row[0] for row in got[rank]] == [sum(r + 1 + c for r in range(ws)) for c in range(CYCLES)]
