"""All-reduce bandwidth/latency: distx against gloo, same processes, same run.

    python -m torch_distx.bench allreduce [options of benchmarks/allreduce.py]

In a source checkout this runs the repository's benchmarks/allreduce.py (both
modes, back-to-back and barrier-separated, medians with min/max over
interleaved repetitions, the memcpy bandwidth of the machine; its --help
lists the options). Without one (an installed wheel) it falls back to a quick
back-to-back measurement, which flatters small messages (pipelined calls) and
says so in its header:

    python -m torch_distx.bench allreduce --nproc 2 [--min-bytes 8] [--max-bytes 64M]
        [--dtype float32] [--json out.json] [--plot out.png]

Columns follow nccl-tests: size (B), count, time_us, algbw (GB/s) and busbw
(GB/s, algbw x 2(P-1)/P). time_us is the slowest rank's mean time per call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.distributed as dist

from torch_distx.bench import _spawn

# Shared with benchmarks/allreduce.py: dtypes, message sizes, the size options, the outputs.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int32": torch.int32, "int64": torch.int64}


def parse_size(text: str) -> int:
    """``"64M"``, ``"4K"``, ``"8"`` (``B`` suffix optional) -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def add_size_options(p: argparse.ArgumentParser) -> None:
    """--min-bytes, --max-bytes, --step and --dtype (read back with :func:`message_sizes`)."""
    p.add_argument("--min-bytes", default="8")
    p.add_argument("--max-bytes", default="64M")
    p.add_argument("--step", type=int, default=4, help="size multiplier between rows")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))


def message_sizes(args: argparse.Namespace) -> list[int]:
    """min-bytes, times step while <= max-bytes, and max-bytes itself."""
    out, s = [], parse_size(args.min_bytes)
    while s <= parse_size(args.max_bytes):
        out.append(s)
        s *= args.step
    if out[-1] != parse_size(args.max_bytes):
        out.append(parse_size(args.max_bytes))
    return out


def write_outputs(result: dict, args: argparse.Namespace, plot: Callable[[dict, str], None]) -> None:
    """The results as JSON to --json and ``plot(result, path)`` to --plot, where given."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)


def _time_allreduce(t: torch.Tensor, group, min_time: float, max_iters: int) -> float:
    for _ in range(3):
        dist.all_reduce(t, group=group)
    # Agree on an iteration count from one probe so every rank runs the same loop.
    start = time.perf_counter()
    dist.all_reduce(t, group=group)
    probe = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(probe, op=dist.ReduceOp.MAX, group=group)
    iters = int(max(5, min(max_iters, min_time / max(probe.item(), 1e-7))))
    dist.barrier(group=group)
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(t, group=group)
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX, group=group)
    return elapsed.item()


def _body(rank: int, nproc: int, sizes: list[int], dtype_name: str, min_time: float) -> dict:
    import torch_distx  # noqa: F401  (registers "distx")

    dist.init_process_group("distx")
    groups = {"distx": None, "gloo": dist.new_group(backend="gloo")}
    dtype = DTYPES[dtype_name]
    elem = torch.tensor([], dtype=dtype).element_size()
    rows = []
    for size in sizes:
        count = max(1, size // elem)
        t = torch.ones(count, dtype=dtype)
        row = {"size": count * elem, "count": count}
        for name, group in groups.items():
            max_iters = 2000 if size <= (1 << 16) else 200
            row[name] = _time_allreduce(t, group, min_time, max_iters)
        rows.append(row)
    dist.destroy_process_group()
    return {"rows": rows, "nproc": nproc, "dtype": dtype_name, "ucx": torch_distx.ucx_version(),
            "torch": torch.__version__}


def _print_table(result: dict) -> None:
    nproc = result["nproc"]
    factor = 2 * (nproc - 1) / nproc
    head = f"{'size':>10} {'count':>10}"
    for name in ("distx", "gloo"):
        head += f" | {name + ' time_us':>14} {'algbw':>7} {'busbw':>7}"
    print(f"# all_reduce SUM {result['dtype']}, {nproc} processes, UCX {result['ucx']}, torch {result['torch']}")
    print("# back-to-back calls only (quick mode): benchmarks/allreduce.py in the source tree also times "
          "barrier-separated calls, with min/max and the memcpy bandwidth")
    print(f"# algbw/busbw in GB/s; ratio = gloo time / distx time (>1: distx faster)")
    print(head + f" | {'ratio':>6}")
    for row in result["rows"]:
        line = f"{row['size']:>10} {row['count']:>10}"
        for name in ("distx", "gloo"):
            t = row[name]
            algbw = row["size"] / t / 1e9
            line += f" | {t * 1e6:>14.1f} {algbw:>7.3f} {algbw * factor:>7.3f}"
        print(line + f" | {row['gloo'] / row['distx']:>6.2f}")


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factor = 2 * (result["nproc"] - 1) / result["nproc"]
    sizes = [r["size"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("distx", "gloo"):
        ax.plot(sizes, [r["size"] / r[name] / 1e9 * factor for r in result["rows"]], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("busbw (GB/s)")
    ax.set_title(f"all_reduce, {result['nproc']} processes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def repo_benchmark() -> str | None:
    """benchmarks/allreduce.py of the source checkout this package runs from, if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "benchmarks", "allreduce.py"))
    return path if os.path.exists(path) else None


def main(argv: list[str]) -> int:
    path = repo_benchmark()
    if path is not None:
        return subprocess.call([sys.executable, path, *argv])
    return quick(argv)


def quick(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m torch_distx.bench allreduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    add_size_options(p)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per size and backend")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--plot", help="write a busbw plot (PNG) here (needs matplotlib)")
    args = p.parse_args(argv)
    result = _spawn.run(args.nproc, _body, message_sizes(args), args.dtype, args.min_time)
    _print_table(result)
    write_outputs(result, args, _plot)
    return 0
