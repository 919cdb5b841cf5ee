"""All-reduce across simulated hosts on throttled links: hierarchical vs flat ring vs gloo.

    sudo .venv/bin/python benchmarks/allreduce_multihost.py \\
        [--rates 1gbit,10gbit] [--configs 2x2,2x4] [--sizes 1M,2M,4M,8M,16M,32M,64M] \\
        [--algos hierarchical,ring,gloo] [--reps 5] [--json out.json] [--plot out.png]

For every (rate, hosts x ranks) the testbed (tests/multihost/testbed.py) makes n
network-namespace hosts whose links are throttled to the rate both ways, and
torchrun starts g ranks per host. The ranks time every algorithm on every size
in one run, interleaved (a different algorithm order each repetition), each
call between two gloo barriers; each distx algorithm runs on a distx group of
its own, made with torch_distx.Options(algo=...), gloo is a gloo group of the
same ranks. `hierarchical-seq` is the split-rail with its three stages one
after the other (piece_bytes=0), for comparison with the pipelined default
(Note [Pipelined split-rail]); `hierarchical@B` uses pieces of B bytes.

Columns (nccl-tests): size (B), count (fp32 elements), time_us (median of the
slowest rank's time per call, [min, max] over calls), algbw = size / time,
busbw = algbw x 2(P-1)/P (GB/s), and link = bytes the busiest host sent on its
link during the call (eth0's tx counter: payload, TCP/IP and Ethernet headers,
ACKs) / (time x rate): the utilisation of the inter-node link.

Byte-count limits: each host's link carries N per call for the hierarchical
all-reduce on 2 hosts, 2(P-1)/P·N for a flat ring over P ranks in rank order
(1.5 N at 2x2, 1.75 N at 2x4): the ceilings of hierarchical's speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from types import ModuleType

import _testbed_launch as launch


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def _fmt_size(n: int) -> str:
    for unit, k in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k}{unit}"
    return str(n)


# ---- rank side (runs under torchrun on a testbed host) --------------------------


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    import torch_distx

    dist.init_process_group("distx")
    gloo = dist.new_group(backend="gloo")
    # Every distx algorithm on a group of its own (pg_options are read once,
    # when a group is made): auto is the default group; hierarchical-seq the
    # split-rail with its stages one after the other; hierarchical@B pieces
    # of B bytes.
    groups = {"gloo": gloo, "auto": None}
    for algo in args.algos.split(","):
        if algo in groups:
            continue
        if algo == "hierarchical-seq" or algo.startswith("hierarchical@"):
            piece = 0 if algo == "hierarchical-seq" else int(algo.split("@")[1])
            options = torch_distx.Options(algo="hierarchical", piece_bytes=piece)
        else:
            options = torch_distx.Options(algo=algo)
        groups[algo] = dist.new_group(backend="distx", pg_options=options)
    rank, ws = dist.get_rank(), dist.get_world_size()
    local0 = int(os.environ["LOCAL_RANK"]) == 0
    sizes = [int(s) for s in args.sizes.split(",")]
    algos = args.algos.split(",")
    bufs = {s: torch.empty(s // 4, dtype=torch.float32) for s in sizes}

    def call(size: int, algo: str) -> tuple[float, int]:
        t = bufs[size]
        t.fill_(1.0)
        group = groups[algo]
        dist.barrier(group=gloo)
        tx0 = launch.tx_bytes() if local0 else 0
        start = time.perf_counter()
        dist.all_reduce(t, group=group)
        elapsed = time.perf_counter() - start
        dist.barrier(group=gloo)
        tx = launch.tx_bytes() - tx0 if local0 else 0
        if t[0].item() != ws or t[-1].item() != ws:
            raise RuntimeError(f"{algo} {size}: wrong result {t[0].item()} (want {ws})")
        return elapsed, tx

    for size in sizes:  # warm-up: endpoints, registration caches, rendezvous buffers
        for algo in algos:
            call(size, algo)
    samples: dict[str, list] = {f"{a}/{s}": [] for a in algos for s in sizes}
    for rep in range(args.reps):
        for size in sizes:
            shift = (rep + sizes.index(size)) % len(algos)
            for algo in algos[shift:] + algos[:shift]:
                samples[f"{algo}/{size}"].append(call(size, algo))
    everyone: list = [None] * ws
    dist.all_gather_object(everyone, samples, group=gloo)
    if rank == 0:
        rows = []
        for size in sizes:
            for algo in algos:
                key = f"{algo}/{size}"
                calls = list(zip(*[everyone[r][key] for r in range(ws)]))  # per call: each rank's sample
                times = [max(s[0] for s in c) for c in calls]
                link = [max(s[1] for s in c) for c in calls]
                rows.append({"algo": algo, "size": size, "count": size // 4, "times": times, "link_bytes": link})
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "world": ws}, f)
    dist.destroy_process_group()


# ---- orchestrator -------------------------------------------------------------------


def _summarise(rows: list[dict], world: int, rate_bits: float) -> list[dict]:
    out = []
    for r in rows:
        t = statistics.median(r["times"])
        util = [b * 8 / (tt * rate_bits) for b, tt in zip(r["link_bytes"], r["times"])]
        algbw = r["size"] / t / 1e9
        out.append({"algo": r["algo"], "size": r["size"], "count": r["count"], "time_us": t * 1e6,
                    "min_us": min(r["times"]) * 1e6, "max_us": max(r["times"]) * 1e6, "algbw": algbw,
                    "busbw": algbw * 2 * (world - 1) / world, "link_util": statistics.median(util),
                    "link_bytes": statistics.median(r["link_bytes"]), "samples_us": [x * 1e6 for x in r["times"]]})
    return out


def _print_table(run: dict) -> None:
    print(f"\n# all_reduce SUM float32, {run['hosts']} hosts x {run['per_host']} ranks, links {run['rate']} "
          f"(each way); time_us = median [min, max] of {run['reps']} calls, slowest rank")
    print(f"{'size':>9} {'count':>9} {'algo':>13} {'time_us':>10} {'[min, max]':>21} {'algbw':>7} {'busbw':>7} "
          f"{'link':>6} {'x ring':>6} {'x gloo':>6}")
    by = {(r["algo"], r["size"]): r for r in run["summary"]}
    for r in run["summary"]:
        ring, gloo = by.get(("ring", r["size"])), by.get(("gloo", r["size"]))
        vs_ring = f"{ring['time_us'] / r['time_us']:6.2f}" if ring else "     -"
        vs_gloo = f"{gloo['time_us'] / r['time_us']:6.2f}" if gloo else "     -"
        rng = f"[{r['min_us']:.0f}, {r['max_us']:.0f}]"
        print(f"{r['size']:>9} {r['count']:>9} {r['algo']:>13} {r['time_us']:>10.0f} {rng:>21} {r['algbw']:>7.3f} "
              f"{r['busbw']:>7.3f} {r['link_util'] * 100:>5.0f}% {vs_ring} {vs_gloo}")


def _plot(runs: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(4.2 * len(runs), 7), squeeze=False)
    for j, run in enumerate(runs):
        algos = list(dict.fromkeys(r["algo"] for r in run["summary"]))
        for algo in algos:
            rows = [r for r in run["summary"] if r["algo"] == algo]
            xs = [r["size"] for r in rows]
            axes[0][j].errorbar(xs, [r["busbw"] for r in rows], marker="o", label=algo,
                                yerr=[[r["busbw"] - r["busbw"] * r["time_us"] / r["max_us"] for r in rows],
                                      [r["busbw"] * r["time_us"] / r["min_us"] - r["busbw"] for r in rows]])
            axes[1][j].plot(xs, [r["link_util"] * 100 for r in rows], marker="o", label=algo)
        axes[0][j].set_title(f"{run['hosts']}x{run['per_host']} ranks, {run['rate']}", fontsize=10)
        axes[1][j].axhline(85, color="grey", lw=0.8, ls="--")
        for i in (0, 1):
            axes[i][j].set_xscale("log", base=2)
            axes[i][j].set_xlabel("message size (bytes)")
        axes[0][j].set_ylabel("busbw (GB/s)")
        axes[1][j].set_ylabel("inter-node link utilisation (%)")
        axes[1][j].set_ylim(0, 110)
        axes[0][j].legend(fontsize=8)
    fig.suptitle("all_reduce fp32, multi-host testbed", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="1gbit,10gbit", help="tc rates; none: unthrottled")
    p.add_argument("--configs", default="2x2,2x4", help="hosts x ranks per host, comma-separated")
    p.add_argument("--sizes", default="1M,2M,4M,8M,16M,32M,64M")
    p.add_argument("--algos", default="hierarchical,ring,gloo",
                   help="distx DISTX_ALGO names (auto: distx's own choice) and gloo")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--burst", default=None, help="tbf burst (default: ~1 ms of traffic, >= 64 KiB)")
    p.add_argument("--json")
    p.add_argument("--plot")
    launch.add_worker_options(p)
    return launch.run(p.parse_args(argv), worker, _orchestrate, "testbed unavailable")


def _orchestrate(a: argparse.Namespace, testbed: ModuleType) -> int:
    sizes = ",".join(str(_parse_size(s)) for s in a.sizes.split(","))
    configs = [tuple(int(x) for x in c.split("x")) for c in a.configs.split(",")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("DISTX_ALGO", "UCX_TLS", "DISTX_HOSTID", "UCX_LOG_LEVEL"):
        env.pop(k, None)
    runs = []
    port = 29700
    for hosts, per_host in configs:
        with testbed.Testbed(hosts, None, burst=a.burst) as tb, tempfile.TemporaryDirectory() as tmp:
            for rate in a.rates.split(","):
                tb.set_rate(None if rate == "none" else rate)
                out = os.path.join(tmp, f"{rate}.json")
                args = ["--sizes", sizes, "--algos", a.algos, "--reps", str(a.reps)]
                port += 1
                t0 = time.time()
                raw = launch.run_workers(tb, __file__, out, args, nproc_per_host=per_host, env=env,
                                         master_port=port, timeout=1800)
                if raw is None:
                    return 1
                run = {"hosts": hosts, "per_host": per_host, "rate": rate, "reps": a.reps,
                       "tbf_burst": a.burst or "auto", "wall_s": time.time() - t0,
                       "summary": _summarise(raw["rows"], raw["world"], testbed.parse_rate(rate) if rate != "none" else float("inf"))}
                runs.append(run)
                _print_table(run)
                sys.stdout.flush()
    meta = {"load_avg": os.getloadavg(), "cpus": os.cpu_count(),
            "git": subprocess.run(["git", "-C", launch.REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()}
    launch.write_outputs(a, {"meta": meta, "runs": runs}, lambda path: _plot(runs, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
