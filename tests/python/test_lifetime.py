"""Lifetime of a process group's resources (issue 8, item 5).

- ``.then`` callbacks never run on the group's worker thread, however the
  completion races with ``get_future()`` (Note [Completion threads]);
- shutdown with a silent peer costs one timeout, not one per queued op
  (Note [Bounded shutdown]);
- repeated init + abort cycles leak neither descriptors nor threads (abort
  used to leak a UCP context and worker each time);
- a send abandoned by a timed-out collective keeps its buffer: a late peer
  reads the data that was sent, never freed or reused memory (Note [Parked
  buffers]);
- a script that never calls destroy_process_group() exits cleanly, with ops
  still queued or not, and a rank that dies of an exception with an op its
  peer never joins exits within the short exit bound, and a forked child
  that exits through atexit leaves its parent's groups alone (Note [Shutdown
  at exit]).
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.distributed as dist

from distx_testing import current_store, free_port, run_ranks, wait_all

pytestmark = pytest.mark.timeout(150)


def _thread_name() -> str:
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def _callback_threads_worker(rank: int, ws: int, iters: int) -> list:
    names = []
    for i in range(iters):
        work = dist.all_reduce(torch.ones(1), async_op=True)
        fut = work.get_future()
        names.append(fut.then(lambda f: _thread_name()).wait())
    return sorted(set(names))


def test_then_callbacks_never_run_on_the_worker_thread() -> None:
    # One rank: the collective completes within microseconds, racing the
    # caller's get_future()/then().
    names = run_ranks(_callback_threads_worker, 1, 3000, timeout=120)[0]
    assert "distx-worker" not in names, f"a .then callback ran on the worker thread: {names}"


def _bounded_shutdown_worker(rank: int, ws: int) -> dict:
    store = current_store()
    if rank == 1:  # alive but silent: never joins the collectives
        store.wait(["shutdown/done"], datetime.timedelta(seconds=60))
        return {}
    works = [dist.all_reduce(torch.ones(100), async_op=True) for _ in range(4)]
    start = time.monotonic()
    dist.destroy_process_group()
    elapsed = time.monotonic() - start
    errors = wait_all(works)
    store.set("shutdown/done", "1")
    return {"elapsed": elapsed, "errors": errors}


def test_shutdown_with_a_silent_peer_is_bounded_as_a_whole() -> None:
    # Liveness off: the peer's silence is only found by deadlines. Four queued
    # ops with a 3 s timeout used to cost 4 x 3 s, plus the teardown barriers.
    out = run_ranks(_bounded_shutdown_worker, 2, timeout=90, pg_timeout=3, env={"DISTX_LIVENESS": "0"})[0]
    assert all(e is not None for e in out["errors"]), out["errors"]
    assert out["elapsed"] < 6, f"destroy_process_group took {out['elapsed']:.1f}s with a 3 s timeout"


def _counts() -> tuple[int, int]:
    return len(os.listdir("/proc/self/task")), len(os.listdir("/proc/self/fd"))


def _abort_cycles_worker(rank: int, ws: int, cycles: int) -> list:
    store = current_store()
    counts = []
    for _ in range(cycles):
        dist.init_process_group("distx", store=store, rank=rank, world_size=ws,
                                timeout=datetime.timedelta(seconds=30))
        t = torch.ones(1000)
        dist.all_reduce(t)
        dist.barrier()
        dist.distributed_c10d._abort_process_group()
        time.sleep(0.2)  # let exiting threads go
        counts.append(_counts())
    return counts


def test_abort_cycles_leak_no_descriptors_or_threads() -> None:
    res = run_ranks(_abort_cycles_worker, 2, 5, backend=None, store="tcp", timeout=120)
    for rank, counts in enumerate(res):
        (t1, f1), (t5, f5) = counts[0], counts[-1]
        assert f5 <= f1 + 2, f"rank {rank}: descriptors after each init+abort: {[c[1] for c in counts]}"
        assert t5 <= t1 + 1, f"rank {rank}: threads after each init+abort: {[c[0] for c in counts]}"


N = 16 << 20  # 64 MiB of float32: sent by rendezvous, allocated with mmap


def _abandoned_send_worker(rank: int, ws: int) -> dict:
    store = current_store()
    if rank == 0:
        t = torch.full((N,), 1.0)
        try:
            dist.broadcast(t, src=0)  # rank 1 is late: times out with the sends in flight
            timed_out = False
        except dist.DistBackendError:
            timed_out = True
        del t  # the user lets go of the tensor, then allocates again
        junk = torch.full((N,), 7.0)
        store.set("abandoned/sent", "1")
        store.wait(["abandoned/received"], datetime.timedelta(seconds=60))
        return {"timed_out": timed_out, "junk": junk[0].item()}
    store.wait(["abandoned/sent"], datetime.timedelta(seconds=60))
    u = torch.zeros(N)
    try:
        dist.broadcast(u, src=0)  # matches rank 0's abandoned sends
        error = None
    except RuntimeError as e:
        error = str(e)
    store.set("abandoned/received", "1")
    return {"error": error, "values": sorted(set(u[:: 1 << 16].tolist()))}


def test_a_timed_out_send_keeps_its_buffer_for_the_late_peer() -> None:
    r0, r1 = run_ranks(_abandoned_send_worker, 2, timeout=120, pg_timeout=2)
    assert r0["timed_out"], "rank 0's broadcast should have timed out waiting for rank 1"
    assert r1["error"] is None, f"the late receive failed: {r1['error']}"
    assert r1["values"] == [1.0], f"the late receive read freed or reused memory: {r1['values']}"


_NO_DESTROY = """
import sys, time
import torch, torch.distributed as dist, torch_distx  # noqa: F401

dist.init_process_group("distx")
rank = dist.get_rank()
if sys.argv[1] == "clean":
    x = torch.full((1 << 16,), float(rank))
    for _ in range(50):
        out = [torch.empty_like(x) for _ in range(2)]
        dist.all_gather(out, x)  # returns; the worker lets go of its tensors after
        assert out[1][0].item() == 1.0
    pending = [dist.all_reduce(torch.ones(1 << 18), async_op=True) for _ in range(4)]
    pending[-1].get_future().then(lambda f: f.value())
    print(f"rank {rank}: leaving without destroy_process_group", flush=True)
elif rank == 1:
    time.sleep(60)  # alive, never joins rank 0's all_reduce; killed by the test
else:
    dist.all_reduce(torch.ones(4), async_op=True)
    print(f"raising at {time.monotonic()}", flush=True)
    raise ValueError("the training script failed")
"""


def _spawn(script: str, mode: str, rank: int, port: int, world: int = 2) -> subprocess.Popen:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
               LOCAL_RANK=str(rank))
    return subprocess.Popen([sys.executable, script, mode], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _spawn_one(script: str, world: int) -> subprocess.Popen:
    return _spawn(script, "", 0, free_port(), world=world)


def test_exit_without_destroy_process_group_is_clean(tmp_path) -> None:
    # Before Note [Shutdown at exit], the worker thread let go of the last
    # tensor during interpreter finalization and the process aborted
    # ("terminate called without an active exception"), every time with ops
    # still queued, and now and then after Lightning's DDP strategy.
    script = tmp_path / "no_destroy.py"
    script.write_text(_NO_DESTROY)
    port = free_port()
    procs = [_spawn(str(script), "clean", r, port) for r in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n{out}"
        assert "terminate called" not in out, out
        assert f"rank {rank}: leaving without destroy_process_group" in out, out


def test_exit_after_an_exception_is_bounded(tmp_path) -> None:
    script = tmp_path / "no_destroy.py"
    script.write_text(_NO_DESTROY)
    port = free_port()
    procs = [_spawn(str(script), "raise", r, port) for r in range(2)]
    try:
        out = procs[0].communicate(timeout=60)[0]
        exited = time.monotonic()
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert procs[0].returncode == 1, f"rank 0 exited with {procs[0].returncode}:\n{out}"
    assert "ValueError: the training script failed" in out, out
    raised = float(out.split("raising at ")[1].split()[0])
    # The queued all_reduce drains for at most min(timeout, 5 s), not 30 s.
    assert exited - raised < 20, f"rank 0 took {exited - raised:.1f} s to exit:\n{out}"


_FORK = """
import os, sys, torch, torch.distributed as dist, torch_distx  # noqa: F401

dist.init_process_group("distx")
t = torch.ones(4)
dist.all_reduce(t)
pid = os.fork()
if pid == 0:
    sys.exit(7)  # runs the atexit handlers in the child: the parent's group is not the child's
_, status = os.waitpid(pid, 0)
dist.all_reduce(t)  # the parent's group still works
print(f"child exit {os.waitstatus_to_exitcode(status)} sum {t[0].item():.0f}", flush=True)
"""


def test_forked_child_exit_leaves_the_parents_group_alone(tmp_path) -> None:
    script = tmp_path / "fork.py"
    script.write_text(_FORK)
    proc = _spawn_one(str(script), world=1)
    try:
        out = proc.communicate(timeout=60)[0]
    finally:
        try:  # on a hang: the parent and its forked child (its own session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"exited with {proc.returncode}:\n{out}"
    assert "child exit 7 sum 1" in out, out
