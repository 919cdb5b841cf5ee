"""All-reduce: distx against gloo in the same processes, interleaved, two modes.

    python benchmarks/allreduce.py [--nproc 2,4] [--min-bytes 8] [--max-bytes 64M]
        [--reps 5] [--json out.json] [--plot out.png]

For every world size, every message size and every repetition, each backend
is timed in both modes, the backends' order alternating between repetitions
(so a burst of load from elsewhere hits both alike):

- back-to-back: ``iters`` calls in a row, time per call (pipelined calls, as
  a loop of small all-reduces sees them);
- barrier-separated: each call preceded by a barrier on a separate gloo
  group, each call timed on its own (what a training step that all-reduces
  after compute sees: no call overlaps the previous one).

A repetition's figure is the slowest rank's time (per call, then averaged over
the calls); the tables show the median over repetitions with its min and max.
Columns follow nccl-tests: size (B), count, time_us, algbw and busbw (GB/s,
busbw = algbw x 2(P-1)/P). ``ratio`` is gloo's median time over distx's (>1:
distx faster). The single-core memcpy bandwidth of the machine, measured in
the same run (64 MiB copies, other ranks idle in a barrier), is printed and
stored beside the results, as the ceiling a shared-memory all-reduce works
against. Writes JSON (every sample) and a PNG (busbw with min-max bars).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

# The package's quick benchmark (python -m torch_distx.bench allreduce without a
# source tree) shares the dtypes, the size options and the outputs.
from torch_distx.bench.allreduce import DTYPES, add_size_options, message_sizes, write_outputs

__all__ = ["main", "run"]

_BACKENDS = ("distx", "gloo")
_MODES = ("back-to-back", "barrier")


def _memcpy_gbps(reps: int = 7, nbytes: int = 64 << 20) -> dict[str, float]:
    """One core's memcpy bandwidth (bytes copied per second), median of reps."""
    import numpy as np

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        samples.append(nbytes / (time.perf_counter() - t0) / 1e9)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def _slowest(values: list[float], sync) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=sync)
    return t.tolist()


def _measure(t: torch.Tensor, group, sync, mode: str, iters: int) -> float:
    """The slowest rank's mean time per call, seconds."""
    if mode == "back-to-back":
        dist.barrier(group=sync)
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(t, group=group)
        return _slowest([(time.perf_counter() - t0) / iters], sync)[0]
    per_call = []
    for _ in range(iters):
        dist.barrier(group=sync)
        t0 = time.perf_counter()
        dist.all_reduce(t, group=group)
        per_call.append(time.perf_counter() - t0)
    return statistics.fmean(_slowest(per_call, sync))  # per call: the slowest rank's time


def _body(rank: int, nproc: int, sizes: list[int], dtype_name: str, reps: int, min_time: float,
          max_iters: int) -> dict:
    import torch_distx

    torch.set_num_threads(1)  # ranks share the cores; gloo and distx use their own threads
    dist.init_process_group("distx", timeout=datetime.timedelta(seconds=600))
    groups = {"distx": dist.group.WORLD, "gloo": dist.new_group(backend="gloo")}
    sync = dist.new_group(backend="gloo")  # barriers and timing exchange only
    dtype = DTYPES[dtype_name]
    elem = torch.tensor([], dtype=dtype).element_size()

    dist.barrier(group=sync)
    memcpy_before = _memcpy_gbps() if rank == 0 else None
    dist.barrier(group=sync)

    rows = []
    for size in sizes:
        count = max(1, size // elem)
        t = torch.ones(count, dtype=dtype)
        probes = []
        for name in _BACKENDS:  # warm up, then agree on one iteration count for both
            for _ in range(3):
                dist.all_reduce(t, group=groups[name])
            dist.barrier(group=sync)
            t0 = time.perf_counter()
            dist.all_reduce(t, group=groups[name])
            probes.append(time.perf_counter() - t0)
        probe = max(_slowest(probes, sync))
        iters = int(max(3, min(max_iters, min_time / max(probe, 1e-7))))
        samples: dict[str, dict[str, list[float]]] = {m: {b: [] for b in _BACKENDS} for m in _MODES}
        for rep in range(reps):
            order = _BACKENDS if rep % 2 == 0 else _BACKENDS[::-1]
            for name in order:
                for mode in _MODES:
                    samples[mode][name].append(_measure(t, groups[name], sync, mode, iters))
        rows.append({"size": count * elem, "count": count, "iters": iters, "samples": samples})

    dist.barrier(group=sync)
    memcpy_after = _memcpy_gbps() if rank == 0 else None
    dist.barrier(group=sync)
    dist.destroy_process_group()
    return {"nproc": nproc, "dtype": dtype_name, "rows": rows, "memcpy_gbps_before": memcpy_before,
            "memcpy_gbps_after": memcpy_after, "ucx": torch_distx.ucx_version(), "torch": torch.__version__}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def print_tables(result: dict[str, Any], out=sys.stdout) -> None:
    meta = result["meta"]
    print(f"# all_reduce SUM {meta['dtype']}, torch {meta['torch']}, UCX {meta['ucx']}, {meta['cpus']} CPUs, "
          f"{meta['reps']} repetitions, {meta['when']}", file=out)
    for run in result["runs"]:
        nproc = run["nproc"]
        factor = 2 * (nproc - 1) / nproc
        m = run["memcpy_gbps"]
        print(f"\n# {nproc} processes; memcpy on one core {m['median']:.2f} GB/s "
              f"(min {m['min']:.2f}, max {m['max']:.2f}, before and after the run)", file=out)
        for mode in _MODES:
            print(f"# mode: {mode}; time_us = slowest rank, median [min-max] over repetitions", file=out)
            head = f"{'size':>10} {'count':>10} {'iters':>5}"
            for name in _BACKENDS:
                head += f" | {name + ' time_us':>14} {'min':>9} {'max':>9} {'algbw':>7} {'busbw':>7}"
            print(head + f" | {'ratio':>6}", file=out)
            for row in run["rows"]:
                line = f"{row['size']:>10} {row['count']:>10} {row['iters']:>5}"
                med = {}
                for name in _BACKENDS:
                    s = _stats(row["samples"][mode][name])
                    med[name] = s["median"]
                    algbw = row["size"] / s["median"] / 1e9
                    line += (f" | {s['median'] * 1e6:>14.1f} {s['min'] * 1e6:>9.1f} {s['max'] * 1e6:>9.1f}"
                             f" {algbw:>7.3f} {algbw * factor:>7.3f}")
                print(line + f" | {med['gloo'] / med['distx']:>6.2f}", file=out)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(len(runs), len(_MODES), figsize=(6 * len(_MODES), 3.6 * len(runs)), squeeze=False)
    for i, run in enumerate(runs):
        factor = 2 * (run["nproc"] - 1) / run["nproc"]
        sizes = [r["size"] for r in run["rows"]]
        for j, mode in enumerate(_MODES):
            ax = axes[i][j]
            for name in _BACKENDS:
                st = [_stats(r["samples"][mode][name]) for r in run["rows"]]
                bw = [s_ / x["median"] / 1e9 * factor for s_, x in zip(sizes, st)]
                lo = [b - s_ / x["max"] / 1e9 * factor for b, s_, x in zip(bw, sizes, st)]
                hi = [s_ / x["min"] / 1e9 * factor - b for b, s_, x in zip(bw, sizes, st)]
                ax.errorbar(sizes, bw, yerr=[lo, hi], marker="o", ms=3, capsize=2, label=name)
            ax.axhline(run["memcpy_gbps"]["median"], ls="--", c="grey", lw=1, label="memcpy, 1 core")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("message size (bytes)")
            ax.set_ylabel("busbw (GB/s)")
            ax.set_title(f"{run['nproc']} processes, {mode}")
            ax.legend(fontsize=8)
    fig.suptitle(f"all_reduce {result['meta']['dtype']}: median over repetitions, bars min-max")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(nprocs: list[int], sizes: list[int], dtype: str = "float32", reps: int = 5, min_time: float = 0.05,
        max_iters: int = 200) -> dict[str, Any]:
    from torch_distx.bench import _spawn

    runs = []
    for nproc in nprocs:
        r = _spawn.run(nproc, _body, sizes, dtype, reps, min_time, max_iters)
        copies = [r["memcpy_gbps_before"], r["memcpy_gbps_after"]]
        r["memcpy_gbps"] = {"median": statistics.median([c["median"] for c in copies]),
                            "min": min(c["min"] for c in copies), "max": max(c["max"] for c in copies)}
        runs.append(r)
    meta = {"dtype": dtype, "reps": reps, "min_time": min_time, "torch": runs[0]["torch"], "ucx": runs[0]["ucx"],
            "cpus": os.cpu_count(), "host": platform.node(), "loadavg": os.getloadavg(),
            "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    return {"meta": meta, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/allreduce.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", default="2,4", help="comma-separated world sizes")
    add_size_options(p)
    p.add_argument("--reps", type=int, default=5, help="repetitions per size, backend and mode")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per measurement (sets iters)")
    p.add_argument("--max-iters", type=int, default=200)
    p.add_argument("--json", help="write every sample as JSON here")
    p.add_argument("--plot", help="write a busbw plot (PNG) here (needs matplotlib)")
    args = p.parse_args(argv)
    result = run([int(n) for n in args.nproc.split(",")], message_sizes(args), args.dtype, args.reps,
                 args.min_time, args.max_iters)
    result["meta"]["argv"] = sys.argv[1:] if argv is None else list(argv)
    print_tables(result)
    write_outputs(result, args, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
