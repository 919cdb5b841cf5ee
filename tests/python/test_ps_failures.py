"""Parameter-server mode (torch_distx.ps) under failures: malformed pushes
rejected and counted, a SIGKILLed worker dropped, a SIGKILLed server named in
every worker's error, a SIGSTOPped worker blocking the others after exactly
s + 1 steps. CPU, 2-4 ranks."""

from __future__ import annotations

import os
import signal
import struct
import threading
import time

import pytest
import torch
import torch.distributed as dist

import torch_distx  # noqa: F401
from torch_distx import ps
from distx_testing import run_ranks, run_ranks_raw

pytestmark = pytest.mark.timeout(240)


def _malformed(rank, world):
    params = [torch.full((8,), 3.0)]
    client = ps.connect(params, staleness=-1, chunk_bytes=32)  # one chunk, on rank 0
    node = client._node
    if rank == 1:
        hdr = struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 0, 0, 1, 1, 0, 0.1, 8, 32)
        bad = [
            b"\xee" * 100,                                                   # garbage
            hdr[:40],                                                        # truncated header
            hdr + b"\x00" * 31,                                              # truncated payload
            struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 1, 0, 1, 1, 0, 0.1, 4, 32) + b"\0" * 32,  # fp64
            struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 0, 9, 1, 1, 0, 0.1, 8, 32) + b"\0" * 32,  # key
            struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 0, 0, 0, 1, 0, 0.1, 8, 32) + b"\0" * 32,  # spoof
            struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 0, 0, 1, 5, 0, 0.1, 8, 32) + b"\0" * 32,  # clock
            struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 0, 0, 1, 1, 0, 0.1, 8, 32)
            + struct.pack("<8f", *([float("nan")] * 8)),                     # NaN payload
            b"\0" * (1 << 16),                                               # oversized
            struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 7, 0, 1, 1, 3, 0.1, 2, 8)
            + struct.pack("<if", 99, 1.0),                                   # top-k index 99 of 8
            struct.pack("<IHBBIIqqdQQ", 0x53505844, 1, 1, 2, 0, 1, 1, 9, 0.1, 8, 16) + b"\0" * 16,  # codec 9
        ]
        for b in bad:
            node._send_raw(0, 0, b)
        # Well-formed ones come back as errors on their chunk's reply channel: four on
        # chunk 0 (spoofed, clock, NaN, top-k index); the unknown key's on chunk 9's, never read here.
        errors = 0
        while True:
            try:
                client.pull()
                break
            except dist.DistBackendError:
                errors += 1
        assert errors == 4, errors
    dist.barrier()
    stats = {}
    if rank == 0:
        for _ in range(500):
            stats = client.stats()
            if stats["rejected"] >= 11:
                break
            time.sleep(0.01)
    dist.barrier()
    client.pull()
    before = params[0].clone()
    dist.barrier()  # both read before either pushes
    client.push([torch.ones(8)])
    client.wait()
    after = params[0].clone()
    # Rank 1 received kError replies for its well-formed bad pushes on chunk 0:
    # they are not its own requests' replies only if it sent none, so only rank 0 checks values.
    client.close()
    return stats, before, after


def test_malformed_pushes_are_rejected_counted_never_applied():
    res = run_ranks_raw(_malformed, 2)
    assert res[0].ok, res[0].traceback
    stats, before, after = res[0].value
    assert stats["applied"] == 0
    by = stats["rejected_by"]
    assert stats["rejected"] == 11, stats
    for reason in ("bad magic", "truncated", "bad dtype", "unknown key", "spoofed sender",
                   "clock out of order", "non-finite payload", "too large", "bad top-k index",
                   "bad codec"):
        assert by[reason] >= 1, (reason, by)
    assert torch.equal(before, torch.full((8,), 3.0))


def _killed_worker(rank, world):
    servers = 1
    if rank == world - 1:
        return ps.serve(servers)
    params = [torch.zeros(16)]
    client = ps.connect(params, staleness=0, servers=servers, chunk_bytes=16)
    done = 0
    for step in range(40):
        if rank == 2 and step == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        client.push([torch.full((16,), 0.01)])
        client.wait()
        done += 1
    client.close()
    return done, params[0][0].item()


def test_killed_worker_is_dropped_and_the_others_go_on():
    res = run_ranks_raw(_killed_worker, 4, timeout=120, grace=60)
    assert res[2].exitcode == -signal.SIGKILL
    for r in (0, 1):
        assert res[r].ok, res[r].traceback
        assert res[r].value[0] == 40
    assert res[3].ok, res[3].traceback
    assert res[3].value["rejected"] == 0


def _killed_server(rank, world, tmp):
    flag = os.path.join(tmp, "go")
    if rank == world - 1:
        def die():
            while not os.path.exists(flag):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=die, daemon=True).start()
        return ps.serve(1)
    params = [torch.zeros(16)]
    client = ps.connect(params, staleness=-1, servers=1, chunk_bytes=16)
    steps = 0
    try:
        while True:
            client.push([torch.full((16,), 0.01)])
            client.wait()
            steps += 1
            if steps == 20 and rank == 0:
                open(flag, "w").close()
    except dist.DistBackendError as e:
        # The default group may not have seen the death yet; abort it rather than
        # wait for the dead rank at teardown.
        dist.distributed_c10d._abort_process_group()
        return steps, str(e)


def test_killed_server_fails_every_worker_naming_it(tmp_path):
    res = run_ranks_raw(_killed_server, 3, str(tmp_path), timeout=120, grace=60)
    assert res[2].exitcode == -signal.SIGKILL
    for r in (0, 1):
        assert res[r].ok, res[r].traceback
        steps, msg = res[r].value
        assert steps > 0
        assert "shard on rank 2" in msg, msg


def _sigstop(rank, world, tmp, s, k):
    servers = 1
    if rank == world - 1:
        # The server rank also plays the operator: once worker 2 has stopped
        # itself and workers 0 and 1 both wait, record their clocks, SIGCONT.
        seen = {}

        def operator():
            pid2 = None
            while True:
                try:
                    pid2 = int(open(os.path.join(tmp, "stopped")).read())
                    blocked = [int(open(os.path.join(tmp, f"wait{r}")).read() or -1) for r in (0, 1)]
                except (OSError, ValueError):
                    time.sleep(0.01)
                    continue
                if all(b == k + s + 1 for b in blocked):
                    time.sleep(1.0)  # they stay blocked: nothing answers beyond the bound
                    seen["blocked"] = [int(open(os.path.join(tmp, f"wait{r}")).read()) for r in (0, 1)]
                    seen["done"] = [int(open(os.path.join(tmp, f"done{r}")).read()) for r in (0, 1)]
                    os.kill(pid2, signal.SIGCONT)
                    return
                time.sleep(0.01)

        t = threading.Thread(target=operator)
        t.start()
        ps.serve(servers)
        t.join()
        return seen
    params = [torch.zeros(8)]
    client = ps.connect(params, staleness=s, servers=servers, chunk_bytes=16)
    for step in range(k + s + 4):
        if rank == 2 and step == k:
            open(os.path.join(tmp, "stopped"), "w").write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)
        client.push([torch.ones(8)])
        if rank < 2:
            open(os.path.join(tmp, f"wait{rank}"), "w").write(str(client.clock))
        client.wait()
        if rank < 2:
            open(os.path.join(tmp, f"done{rank}"), "w").write(str(client.clock))
    log = client.reply_log()
    client.close()
    return max(c - m for c, m in log)


def test_sigstopped_worker_blocks_the_others_after_exactly_s_plus_one_steps(tmp_path):
    s, k = 2, 3
    res = run_ranks(_sigstop, 4, str(tmp_path), s, k, timeout=120)
    seen = res[3]
    assert seen["blocked"] == [k + s + 1, k + s + 1]   # pushed clock k+s+1, its pull held
    assert seen["done"] == [k + s, k + s]              # completed exactly up to k+s
    for r in (0, 1, 2):
        assert res[r] <= s

