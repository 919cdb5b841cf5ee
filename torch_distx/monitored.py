"""monitored_barrier for distx groups.

torch.distributed.monitored_barrier refuses every backend but gloo before it
reaches the backend; this calls the process group's own monitored_barrier,
which distx implements (csrc/backend/monitored_barrier.cpp). On a gloo group
it defers to torch's function, so code can call it unconditionally.
"""

from __future__ import annotations

from datetime import timedelta

import torch.distributed as dist
from torch.distributed import distributed_c10d as c10d


def monitored_barrier(group: dist.ProcessGroup | None = None, timeout: timedelta | None = None,
                      wait_all_ranks: bool = False) -> None:
    """Like torch.distributed.monitored_barrier, for distx (and gloo) groups.

    Rank 0 waits up to ``timeout`` (default: the group's timeout) for every
    other rank and raises ``DistBackendError`` naming the first rank that did
    not arrive ("Rank 2 failed to pass monitoredBarrier in 2000 ms"), or every
    such rank with ``wait_all_ranks=True``; the other ranks then fail too.
    """
    if c10d._rank_not_in_group(group):
        return
    pg = group or c10d._get_default_group()
    backend = c10d.get_backend(pg)
    if backend == dist.Backend.GLOO:
        c10d.monitored_barrier(group, timeout, wait_all_ranks)
        return
    if backend != "distx":
        raise ValueError(f"monitored_barrier: the group runs on {backend!r}, not distx or gloo")
    if timeout is None:
        pg.monitored_barrier(wait_all_ranks=wait_all_ranks)
    else:
        pg.monitored_barrier(timeout, wait_all_ranks)
