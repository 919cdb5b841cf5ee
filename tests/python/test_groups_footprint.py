"""Many sub-groups stay cheap (Note [Shared UCX runtime]).

DeviceMesh, HSDP and libraries create many groups. Every distx group shares
the process's UCX context, worker, progress thread and liveness watcher, so 64
``new_group(backend="distx")`` sub-groups of a 2-rank job may add at most 64
threads (one worker thread each) and 512 file descriptors per process. Gloo's
numbers are measured in the same test under DISTX_TEST_LONG=1, for the record
(``-s`` prints them).
Each sub-group also runs one all_reduce, checked exactly: groups on one
shared worker must never see each other's messages (Note [Tag layout]), so
the groups' collectives are issued back to back, asynchronously.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from distx_testing import run_ranks

pytestmark = pytest.mark.timeout(150)

GROUPS = 64


def _counts() -> tuple[int, int]:
    return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))


def _footprint_worker(rank: int, ws: int, backend: str) -> dict:
    t = torch.ones(4)
    dist.all_reduce(t)
    before = _counts()
    groups = [dist.new_group(list(range(ws)), backend=backend) for _ in range(GROUPS)]
    tensors = [torch.full((1000,), float(i * ws + rank)) for i in range(GROUPS)]
    works = [dist.all_reduce(x, group=g, async_op=True) for g, x in zip(groups, tensors)]
    for w in works:
        w.wait()
    after = _counts()
    ok = all(x[0].item() == sum(i * ws + r for r in range(ws)) and bool((x == x[0]).all())
             for i, x in enumerate(tensors))
    return {"threads": (before[0], after[0]), "fds": (before[1], after[1]), "ok": ok}


def test_64_subgroups_add_at_most_64_threads_and_512_fds() -> None:
    got = run_ranks(_footprint_worker, 2, "distx", timeout=120)
    runs = [("distx", got)]
    if os.environ.get("DISTX_TEST_LONG") == "1":
        runs.append(("gloo", run_ranks(_footprint_worker, 2, "gloo", timeout=120)))
    for name, res in runs:
        for rank, r in enumerate(res):
            print(f"{name} rank {rank}: threads {r['threads'][0]} -> {r['threads'][1]} "
                  f"(+{r['threads'][1] - r['threads'][0]}), fds {r['fds'][0]} -> {r['fds'][1]} "
                  f"(+{r['fds'][1] - r['fds'][0]}) for {GROUPS} sub-groups")
    for rank, r in enumerate(got):
        assert r["ok"], f"rank {rank}: a sub-group's all_reduce gave a wrong result"
        added_threads = r["threads"][1] - r["threads"][0]
        added_fds = r["fds"][1] - r["fds"][0]
        assert added_threads <= GROUPS, f"rank {rank}: {GROUPS} sub-groups added {added_threads} threads"
        assert added_fds <= 8 * GROUPS, f"rank {rank}: {GROUPS} sub-groups added {added_fds} fds"
    for name, res in runs[1:]:
        assert all(r["ok"] for r in res), name
