"""A short run of the Python-facing backend under ThreadSanitizer (`make test-tsan`).

    python tests/tsan/smoke.py --lib build/tsan-lib

The parent (plain Python, no TSan) starts 2 ranks as subprocesses of this
script with LD_PRELOAD=libtsan and PYTHONPATH=<lib> (a copy of the package
whose _C is built with DISTX_TSAN=1). Each rank, over a FileStore: init,
all_reduce (small and 4 MiB), broadcast, all_gather, async ops with wait() and
get_future().then(), a sub-group, the other collectives and p2p once each, an
fp16-compressed group, two Python threads posting on two groups while the main
thread calls set_timeout and reads counters, destroying a group with ops
queued, monitored_barrier, a per-op timeout, an abort with ops in flight, a few
DDP steps, destroy_process_group. Every result is compared with the value it
must have.

The run fails on any TSan report (halt_on_error=1, exitcode=66; a report that
does not halt is still found in the rank's stderr), a wrong result, a non-zero
exit or a hang. Suppressions: tests/tsan/suppressions.txt (each one says why it
is a false positive).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time

__all__ = ["main"]

HERE = os.path.dirname(os.path.abspath(__file__))
WORLD = 2
RANK_TIMEOUT_S = 300  # the whole run takes ~20 s on 2 busy cores
GRACE_S = 30


def _rank_main(rank: int, store_path: str, lib: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn as nn

    import torch_distx

    assert torch_distx._C.__file__.startswith(lib + os.sep), f"loaded {torch_distx._C.__file__}, not the TSan build"
    peer = 1 - rank
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group("distx", store=store, rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))

    # all_reduce: small, and 4 MiB (several chunks, the pipelined ring).
    t = torch.full((7,), float(rank + 1))
    dist.all_reduce(t)
    assert t.tolist() == [3.0] * 7, t
    n = 1 << 20
    big = torch.arange(n, dtype=torch.float32) * (rank + 1)
    dist.all_reduce(big)
    assert torch.equal(big, torch.arange(n, dtype=torch.float32) * 3), "4 MiB all_reduce"
    m = torch.tensor([float(rank)])
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    assert m.item() == 1.0, m

    # broadcast, all_gather.
    b = torch.arange(1000, dtype=torch.int64) if rank == 1 else torch.zeros(1000, dtype=torch.int64)
    dist.broadcast(b, src=1)
    assert torch.equal(b, torch.arange(1000, dtype=torch.int64)), "broadcast"
    outs = [torch.empty(5) for _ in range(WORLD)]
    dist.all_gather(outs, torch.full((5,), float(rank)))
    assert [o.tolist() for o in outs] == [[0.0] * 5, [1.0] * 5], outs

    # Async: several ops in flight; wait(), and a callback chained on the
    # Future (runs on a completion thread or the caller's).
    works, tensors = [], []
    for i in range(8):
        x = torch.full((1000 * (i + 1),), float(i + rank))
        tensors.append(x)
        works.append(dist.all_reduce(x, async_op=True))
    fut = dist.all_reduce(torch.ones(64) * (rank + 1), async_op=True).get_future()
    chained = fut.then(lambda f: f.value()[0].sum().item())
    for w in works:
        w.wait()
    for i, x in enumerate(tensors):
        assert torch.all(x == float(2 * i + 1)), f"async op {i}"
    assert chained.wait() == 64 * 3.0, chained.value()

    # A sub-group (its own worker thread and UCX endpoints on the shared runtime).
    sub = dist.new_group([0, 1], backend="distx")
    s = torch.full((3,), float(rank))
    dist.all_reduce(s, group=sub)
    assert s.tolist() == [1.0] * 3, s

    # The other collectives, once each.
    rs = torch.empty(2)
    dist.reduce_scatter_tensor(rs, torch.arange(4, dtype=torch.float32) + 10 * rank)
    assert rs.tolist() == ([10.0, 12.0] if rank == 0 else [14.0, 16.0]), rs
    a2a = torch.empty(2)
    dist.all_to_all_single(a2a, torch.tensor([10.0 * rank, 10.0 * rank + 1]))
    assert a2a.tolist() == [float(rank), 10.0 + rank], a2a
    glist = [torch.empty(3) for _ in range(WORLD)] if rank == 0 else None
    dist.gather(torch.full((3,), float(rank + 5)), glist, dst=0)
    if rank == 0:
        assert [g.tolist() for g in glist] == [[5.0] * 3, [6.0] * 3], glist
    sc = torch.empty(2)
    dist.scatter(sc, [torch.full((2,), 7.0), torch.full((2,), 8.0)] if rank == 1 else None, src=1)
    assert sc.tolist() == [7.0 + rank] * 2, sc
    dist.barrier()

    # Point-to-point: isend/irecv both ways, and a receive from any source.
    mine = torch.arange(10, dtype=torch.float32) + 100 * rank
    got = torch.empty(10)
    reqs = [dist.isend(mine, dst=peer, tag=3), dist.irecv(got, src=peer, tag=3)]
    for r in reqs:
        r.wait()
    assert torch.equal(got, torch.arange(10, dtype=torch.float32) + 100 * peer), got
    if rank == 0:
        anysrc = torch.empty(4)
        assert dist.recv(anysrc) == 1 and anysrc.tolist() == [1.0] * 4, anysrc
    else:
        dist.send(torch.ones(4), dst=0)

    # A compressed group (fp16 on the whole ring, parallel codec path): values
    # that fp16 holds exactly come back exact.
    cgroup = dist.new_group([0, 1], backend="distx", pg_options=torch_distx.Options(
        compress="fp16", compress_scope="all", compress_min_bytes=0))
    c = torch.arange(1 << 16, dtype=torch.float32).remainder(256) + rank
    dist.all_reduce(c, group=cgroup)
    assert torch.equal(c, torch.arange(1 << 16, dtype=torch.float32).remainder(256) * 2 + 1), "fp16 all_reduce"

    # Concurrency from Python: two threads post async ops on two groups at
    # once while the main thread changes one group's timeout and reads
    # counters and the topology; then one group is destroyed with ops queued
    # (destroy drains them).
    groups = [dist.new_group([0, 1], backend="distx") for _ in range(2)]
    results: dict[int, list[float]] = {}

    def post(idx: int) -> None:
        ws, ts = [], []
        for i in range(20):
            x = torch.full((256 * (i % 4 + 1),), float(idx + i + rank))
            ts.append(x)
            ws.append(dist.all_reduce(x, group=groups[idx], async_op=True))
        for w in ws:
            w.wait()
        results[idx] = [x[0].item() for x in ts]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    g0backend = groups[0]._get_backend(torch.device("cpu"))
    for _ in range(20):
        g0backend.set_timeout(datetime.timedelta(seconds=60))
        torch_distx.compression_stats(groups[1])
        torch_distx.topology(groups[0])
    for th in threads:
        th.join()
    for idx in range(2):
        assert results[idx] == [2.0 * (idx + i) + 1 for i in range(20)], (idx, results[idx])
    queued = [torch.full((1000,), float(rank + i)) for i in range(5)]
    qworks = [dist.all_reduce(q, group=groups[1], async_op=True) for q in queued]
    dist.destroy_process_group(groups[1])
    for i, (q, w) in enumerate(zip(queued, qworks)):
        w.wait()
        assert torch.all(q == 2.0 * i + 1), f"queued op {i} before destroy"
    torch_distx.monitored_barrier(groups[0], timeout=datetime.timedelta(seconds=60))

    # A per-op timeout: rank 0 all_reduces alone on a group with a 1 s timeout.
    tgroup = dist.new_group([0, 1], backend="distx")
    tbackend = tgroup._get_backend(torch.device("cpu"))
    tbackend.set_timeout(datetime.timedelta(seconds=1))
    if rank == 0:
        try:
            dist.all_reduce(torch.ones(100), group=tgroup)
            raise AssertionError("all_reduce without the peer did not time out")
        except dist.DistBackendError as e:
            assert "Timed out" in str(e), str(e)
    store.set(f"smoke/timeout_done/{rank}", "1")
    store.wait([f"smoke/timeout_done/{peer}"])
    dist.distributed_c10d._abort_process_group(tgroup)

    # Abort with ops in flight: rank 0 queues ops rank 1 never joins, then aborts.
    agroup = dist.new_group([0, 1], backend="distx")
    dist.all_reduce(torch.ones(2), group=agroup)
    if rank == 0:
        pending = [dist.all_reduce(torch.ones(1000), group=agroup, async_op=True) for _ in range(3)]
        time.sleep(0.2)
        dist.distributed_c10d._abort_process_group(agroup)
        for i, w in enumerate(pending):
            try:
                w.wait()
                raise AssertionError(f"op {i} completed although its group was aborted")
            except RuntimeError as e:
                assert "abort" in str(e) or "shut down" in str(e), str(e)
        store.set("smoke/aborted", "1")
    else:
        store.wait(["smoke/aborted"])
        dist.distributed_c10d._abort_process_group(agroup)

    # DDP: a few steps of a tiny model; the replicas must stay identical.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.001)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(100 + rank)
    for _ in range(3):
        opt.zero_grad()
        loss = ddp(torch.randn(8, 16, generator=gen)).pow(2).mean()
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    assert torch.equal(gathered[0], gathered[1]), "DDP replicas diverged"

    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank}: ok", flush=True)


def _tsan_runtime() -> str:
    path = subprocess.check_output(["gcc", "-print-file-name=libtsan.so"], text=True).strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        sys.exit("tsan smoke: gcc has no libtsan.so (Debian: apt-get install libgcc-12-dev)")
    return os.path.realpath(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", default="build/tsan-lib", help="directory holding the TSan-built torch_distx")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        _rank_main(args.rank, args.store, os.path.abspath(args.lib))
        return 0

    lib = os.path.abspath(args.lib)
    if not os.path.exists(os.path.join(lib, "torch_distx", "__init__.py")):
        sys.exit(f"tsan smoke: no TSan build of torch_distx in {lib}")
    suppressions = os.path.join(HERE, "suppressions.txt")
    env = dict(os.environ)
    env.update({
        # torch's intra-op pool is libgomp, which is not built with TSan: its
        # barriers are invisible, so every parallel kernel would be reported.
        # One thread keeps torch's kernels on the calling thread.
        "OMP_NUM_THREADS": "1",
        # UCX's memory hooks patch glibc's mmap/munmap/madvise (bistro) and
        # malloc (reloc). A thread's exit calls madvise from glibc after TSan
        # has retired the thread; the patched madvise then takes a
        # pthread_rwlock that TSan intercepts, and the process dies of SIGSEGV
        # inside TSan (tsan_rtl_mutex.cpp, from ucm_madvise in start_thread).
        # The malloc hooks are off too, as a precaution: TSan must be the one
        # allocator every library uses. The hooks only feed UCX's
        # registration cache, which the CPU transports here do not need.
        "UCX_MEM_MMAP_HOOK_MODE": "none",
        "UCX_MEM_MALLOC_HOOKS": "no",
        "LD_PRELOAD": _tsan_runtime(),
        "PYTHONPATH": os.pathsep.join([lib] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        "TSAN_OPTIONS": " ".join([
            "halt_on_error=1", "exitcode=66", "second_deadlock_stack=1", "print_suppressions=1",
            f"suppressions={suppressions}", env.get("TSAN_OPTIONS", ""),
        ]).strip(),
    })
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="distx-tsan-") as tmp:
        procs, logs = [], []
        for rank in range(WORLD):
            log = open(os.path.join(tmp, f"rank{rank}.log"), "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--rank", str(rank),
                 "--store", os.path.join(tmp, "store"), "--lib", lib],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp))
        # Wait for both; once one has failed, the other gets GRACE_S to end
        # (it may be blocked on the dead peer) before it is killed.
        deadline = start + RANK_TIMEOUT_S
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + GRACE_S)
            time.sleep(0.2)
        codes: list[int | str] = []
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
                codes.append("killed (hung)")
            else:
                codes.append(p.returncode)
        reports = 0
        matched: dict[str, int] = {}  # suppression -> matches, over both ranks
        for rank, log in enumerate(logs):
            log.seek(0)
            text = log.read()
            log.close()
            n = text.count("WARNING: ThreadSanitizer")
            reports += n
            # print_suppressions=1: "ThreadSanitizer: Matched N suppressions
            # (pid=...):" then one "<count> <type>:<pattern>" line each.
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if line.startswith("ThreadSanitizer: Matched"):
                    for entry in lines[i + 1:]:
                        count, _, pattern = entry.strip().partition(" ")
                        if not count.isdigit():
                            break
                        matched[pattern] = matched.get(pattern, 0) + int(count)
            if codes[rank] != 0 or n or f"rank {rank}: ok" not in text:
                print(f"---- rank {rank}: exit {codes[rank]}, {n} TSan report(s); its output:")
                print(text)
    elapsed = time.monotonic() - start
    ok = all(c == 0 for c in codes) and reports == 0
    for pattern, count in sorted(matched.items()):
        print(f"tsan smoke: suppressed {count}x {pattern} (tests/tsan/suppressions.txt says why)")
    print(f"tsan smoke: {'ok' if ok else 'FAILED'}: exit codes {codes}, TSan reports {reports}, {elapsed:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
