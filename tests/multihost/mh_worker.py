"""Rank body for the multi-host tests, run by torchrun on every testbed host.

    torchrun ... mh_worker.py allreduce OUT_DIR     distx vs gloo on the same inputs
    torchrun ... mh_worker.py kill OUT_DIR VICTIM   VICTIM SIGKILLs itself mid-stream

Each rank writes OUT_DIR/rank<r>.json; UCX logs (when UCX_LOG_LEVEL is set) go to
OUT_DIR/ucx.rank<r>.log.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import socket
import sys
import time

RANK = int(os.environ["RANK"])
os.environ.setdefault("UCX_LOG_FILE", os.path.join(sys.argv[2], f"ucx.rank{RANK}.log"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import distx_oracle  # noqa: E402
import distx_testing  # noqa: E402

import torch_distx  # noqa: E402,F401

# (dtype, op, count): one message below the small-message threshold, odd
# counts that split unevenly over ranks and hosts, and messages large enough
# for the large-message (split-rail) path.
CASES = [
    (torch.float32, "SUM", 1),
    (torch.float32, "SUM", 1000),
    (torch.float32, "SUM", (1 << 20) + 3),
    (torch.float32, "AVG", (1 << 18) + 5),
    (torch.float64, "MAX", 300_001),
    (torch.int64, "SUM", 200_003),
    (torch.bfloat16, "SUM", (1 << 19) + 1),
    (torch.float16, "PRODUCT", 70_001),
    (torch.int32, "MIN", 17),
    (torch.float32, "PREMUL_SUM", 250_007),
]


def _algorithms() -> list[str]:
    """distx's own choice ("auto"), and each hierarchical algorithm forced
    through pg_options.algo (DISTX_ALGO's option: read once per group)."""
    return ["auto", "hierarchical", "leaders"]


def _groups() -> dict:
    """One distx group per algorithm: "auto" is the default group."""
    return {algo: None if algo == "auto" else dist.new_group(pg_options=torch_distx.Options(algo=algo))
            for algo in _algorithms()}


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def allreduce(out_dir: str) -> dict:
    dist.init_process_group("distx", timeout=datetime.timedelta(seconds=60))
    gloo = dist.new_group(backend="gloo")
    ws = dist.get_world_size()
    groups = _groups()
    cases = []
    for i, (dtype, op, n) in enumerate(CASES):
        x = distx_oracle.values(dtype, op, n, RANK, salt=i)
        want = distx_oracle.gloo_reduced(x, op, ws, gloo)
        for algo in _algorithms():
            got = x.clone()
            dist.all_reduce(got, op=distx_oracle.reduce_op(op), group=groups[algo])
            err = None
            try:
                distx_oracle.check(got, want, f"{algo}: {dtype} {op} n={n}", op)
            except AssertionError as e:
                err = str(e)
            # Bit-identical on every rank: all-gather each rank's digest over gloo.
            digests: list = [None] * ws
            dist.all_gather_object(digests, _digest(got), group=gloo)
            cases.append({"case": f"{algo}: {dtype} {op} n={n}", "error": err,
                          "same_on_all_ranks": len(set(digests)) == 1})
    # Traffic probe: this many bytes of distx all-reduce between two barriers;
    # the test compares the link counters against it.
    big = torch.ones(4 << 20)  # 16 MiB
    dist.barrier(group=gloo)
    for _ in range(2):
        dist.all_reduce(big)
    ok_big = bool((big == ws * ws).all())  # ones, then ws*ones reduced again
    dist.barrier(group=gloo)
    res = {"rank": RANK, "hostname": socket.gethostname(),
           "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(),
           "local_world_size": int(os.environ["LOCAL_WORLD_SIZE"]), "cases": cases,
           "probe_bytes": 2 * big.numel() * 4, "probe_ok": ok_big, "algorithms": _algorithms(),
           "topology": torch_distx.topology()}
    dist.destroy_process_group()
    return res


def kill(out_dir: str, victim: int) -> dict:
    dist.init_process_group("distx", timeout=datetime.timedelta(seconds=120))  # detection must not be the timeout
    if RANK != victim:
        # torchrun stops the victim's host-mates with SIGTERM once the victim
        # is gone; they leave on their own as soon as they see the death.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    t = torch.ones(1 << 18)
    for _ in range(3):
        dist.all_reduce(t)
    if RANK == victim:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    error, detect = distx_testing.all_reduce_until_error(t, 1_000_000)
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass
    return {"rank": RANK, "hostname": socket.gethostname(), "error": error, "detect_s": detect}


def main() -> None:
    mode, out_dir = sys.argv[1], sys.argv[2]
    res = allreduce(out_dir) if mode == "allreduce" else kill(out_dir, int(sys.argv[3]))
    with open(os.path.join(out_dir, f"rank{RANK}.json"), "w") as f:
        json.dump(res, f, default=str)
    if res.get("error"):
        # Fail as a training script would: torchrun then stops this host's job
        # at once (a host whose workers all succeed waits up to 300 s at its
        # exit barrier for the failed host).
        sys.exit(1)


if __name__ == "__main__":
    main()
