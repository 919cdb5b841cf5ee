"""All-reduce of CUDA tensors: distx against a baseline in the same processes.

    python -m torch_distx.bench gpu --mode world1 [--max-bytes 256M] [--json out.json]
    python -m torch_distx.bench gpu --mode hosts2 [--max-bytes 64M] [--json out.json]

world1: one process, one GPU: distx (NCCL communicator of one rank) against
torch's own "nccl" backend; this measures distx's per-call overhead (events,
internal stream, Work) over the same NCCL kernel.
hosts2: two processes on GPU 0 that claim different hosts (DISTX_HOSTID), so
distx runs its inter-node stage over UCX (host-staged); the baseline is
"gloo" on the same CUDA tensors (torch's nccl cannot put two ranks on one GPU).

Columns follow nccl-tests (size, count, time_us, algbw, busbw); time_us is the
median over --reps timed repetitions of --iters back-to-back calls (CUDA events
around the loop on rank 0), with the min and max; backends are interleaved
per repetition so drift hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
import torch.distributed as dist

from torch_distx.bench import _spawn
from torch_distx.bench.allreduce import parse_size


def _time(t: torch.Tensor, group, iters: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    dist.barrier(group=group)
    start.record()
    for _ in range(iters):
        dist.all_reduce(t, group=group)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def _body(rank: int, nproc: int, mode: str, sizes: list[int], reps: int) -> dict:
    if mode == "hosts2":
        os.environ["DISTX_HOSTID"] = f"benchhost{rank}"
    import torch_distx  # noqa: F401

    torch.cuda.set_device(0)
    dist.init_process_group("distx")
    baseline = "nccl" if mode == "world1" else "gloo"
    groups = {"distx": dist.group.WORLD, baseline: dist.new_group(backend=baseline)}
    rows = []
    for size in sizes:
        count = max(1, size // 4)
        t = torch.ones(count, device="cuda")
        iters = 50 if size <= (1 << 20) else 10
        for g in groups.values():  # warm-up (communicator creation, first-touch)
            _time(t, g, 3)
        samples: dict[str, list[float]] = {name: [] for name in groups}
        for _ in range(reps):
            for name, g in groups.items():
                samples[name].append(_time(t, g, iters))
        row = {"size": count * 4, "count": count}
        for name, xs in samples.items():
            row[name] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
        rows.append(row)
    dist.destroy_process_group()
    return {"mode": mode, "nproc": nproc, "baseline": baseline, "rows": rows,
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
            "nccl": torch_distx._C.nccl_version(), "ucx": torch_distx.ucx_version()}


def _print(result: dict) -> None:
    nproc = result["nproc"]
    factor = 2 * (nproc - 1) / nproc if nproc > 1 else 1.0
    names = ["distx", result["baseline"]]
    print(f"# all_reduce SUM float32, mode {result['mode']}, {nproc} process(es) on {result['gpu']}, "
          f"torch {result['torch']}, NCCL {result['nccl']}, UCX {result['ucx']}")
    print("# time_us = median [min, max] of the repetitions; algbw/busbw GB/s from the median")
    head = f"{'size':>10} {'count':>10}"
    for n in names:
        head += f" | {n + ' time_us':>16} {'[min,max]':>17} {'algbw':>7} {'busbw':>7}"
    print(head)
    for row in result["rows"]:
        line = f"{row['size']:>10} {row['count']:>10}"
        for n in names:
            m = row[n]
            algbw = row["size"] / m["median"] / 1e9
            line += (f" | {m['median'] * 1e6:>16.1f} [{m['min'] * 1e6:>7.1f},{m['max'] * 1e6:>8.1f}]"
                     f" {algbw:>7.2f} {algbw * factor:>7.2f}")
        print(line)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m torch_distx.bench gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["world1", "hosts2"], default="world1")
    p.add_argument("--min-bytes", default="4K")
    p.add_argument("--max-bytes", default="64M")
    p.add_argument("--step", type=int, default=8)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--json")
    args = p.parse_args(argv)
    sizes, s = [], parse_size(args.min_bytes)
    while s <= parse_size(args.max_bytes):
        sizes.append(s)
        s *= args.step
    nproc = 1 if args.mode == "world1" else 2
    result = _spawn.run(nproc, _body, args.mode, sizes, args.reps)
    _print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0
