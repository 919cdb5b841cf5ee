"""Parameter server vs synchronous DDP with stragglers (issue 10, item 9).

4 workers train an MLP on scikit-learn's digits, batch 32, SGD lr 0.5 (DDP;
lr/4 per worker in delta mode, which sums the updates), with a simulated
compute time per step (a sleep between forward and backward, so the 2-core CI
machine is not the limit, and after the forward's wait for the PS pull, so it
never hides that wait):
  (a) persistent: worker 3 is 3x slower every step;
  (b) jitter: every worker's step is 4x slower with probability 1/4.
Compared in the same run, interleaved, each config `--reps` times:
synchronous DDP on distx and on gloo, and torch_distx.ps (delta mode, colocated
shards) with staleness 0, 2 and -1 (async). Reported: samples/s over all
workers (median, min, max) and the wall time until rank 0's parameters reach
the target test accuracy. Synchronous DDP agrees every 8 steps (one small
all-reduce) on when to stop, so every rank takes the same number of steps.

    python benchmarks/ps_straggler.py [--seconds 4] [--reps 3] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist

CONFIGS = ["ddp-gloo", "ddp-distx", "ps-s0", "ps-s2", "ps-async"]
SCENARIOS = ["persistent", "jitter"]


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def _all(rank: int, world: int, plan: list[tuple[str, str, int]], store_dir: str,
         kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the plan in the same 4 processes (one group per run)."""
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` shows where a rank waits
    torch.set_num_threads(1)
    out = []
    for i, (config, scenario, rep) in enumerate(plan):
        # A run that takes far longer than its budget is stuck: dump every thread's stack.
        faulthandler.dump_traceback_later(kwargs["seconds"] + 120, exit=False)
        r = _body(rank, world, config, scenario, seed=rep, store=f"{store_dir}/store{i}", **kwargs)
        faulthandler.cancel_dump_traceback_later()
        out.append(dict(r, config=config, scenario=scenario, rep=rep))
        if rank == 0:
            print(f"rep {rep} {scenario:10s} {config:9s} {r['samples_per_s']:8.0f} samples/s  "
                  f"target {r['time_to_target_s']}  acc {r['final_acc']:.3f}", file=sys.stderr)
    return out


# Note [gloo teardown deadlock]: ProcessGroupGloo's destructor joins its
# worker threads on the thread that drops the last reference, here the main
# thread holding the GIL (DDP's Reducer freed when _body returns). A worker
# thread that is still destroying a finished work (the last all_reduce) must
# decref that work's Python-visible tensors, which takes the GIL: both wait
# forever (seen with gdb: main in ~ProcessGroupGloo -> thread::join, the
# pt_gloo_runloop thread in ~AsyncAllreduceWork -> decref_pyobject -> take_gil).
# So the benchmark lets the worker threads drain with the GIL released, and
# keeps each gloo group's last reference until the process exits (by then
# every work is long gone), instead of freeing it mid-run.
_KEEP_ALIVE: list[Any] = []


def _teardown(model: Any, backend: str) -> None:
    time.sleep(0.2)  # GIL released: the gloo threads finish destroying their last works
    if backend == "gloo":
        _KEEP_ALIVE.append(model)  # holds the Reducer, which holds the group
    dist.destroy_process_group()


def _body(rank: int, world: int, config: str, scenario: str, seconds: float, compute: float,
          batch: int, lr: float, target: float, seed: int, store: str) -> dict[str, Any]:
    import torch_distx  # noqa: F401
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch_distx import ps

    backend = "gloo" if config == "ddp-gloo" else "distx"
    dist.init_process_group(backend, store=dist.FileStore(store, world), rank=rank, world_size=world)
    (xtr, ytr), (xte, yte) = _digits()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model = DDP(net, broadcast_buffers=False)
    is_ps = config.startswith("ps")
    # DDP averages gradients; delta mode sums the workers' updates: lr / world per worker.
    opt = torch.optim.SGD(model.parameters(), lr=lr / world if is_ps else lr)
    handle = None
    if is_ps:
        handle = ps.attach(model, opt, mode="delta",
                           staleness={"ps-s0": 0, "ps-s2": 2, "ps-async": -1}[config])
    rng = random.Random(seed * 100 + rank)
    g = torch.Generator().manual_seed(seed * 100 + rank)
    stop = torch.zeros(1)
    dist.barrier()
    t0 = time.perf_counter()
    steps, reached = 0, None
    while True:
        elapsed = time.perf_counter() - t0
        if is_ps:
            if elapsed >= seconds:
                break
        elif steps % 8 == 0:  # every rank must take the same number of steps: agree to stop
            # (every 8th step only, so the extra collective costs DDP little)
            stop.fill_(1.0 if elapsed >= seconds else 0.0)
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            if stop.item() > 0:
                break
        c = compute
        if scenario == "persistent" and rank == world - 1:
            c *= 3
        elif scenario == "jitter" and rng.random() < 0.25:
            c *= 4
        idx = torch.randint(0, len(ytr), (batch,), generator=g)
        # The forward waits for the pull in flight (PS); the simulated compute comes
        # after it, so it never overlaps the wait for the other workers (else s=0
        # would hide a step of compute behind the pull and look like s=1).
        loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        time.sleep(c)
        loss.backward()
        opt.step()
        opt.zero_grad()
        steps += 1
        if rank == 0 and reached is None and steps % 10 == 0:
            if handle is not None:
                handle.sync()
            with torch.no_grad():
                acc = float((model.module(xte).argmax(1) == yte).float().mean())
            if acc >= target:
                reached = time.perf_counter() - t0
    wall = time.perf_counter() - t0
    if handle is not None:
        handle.detach()
    counts = torch.tensor([float(steps)])
    dist.all_reduce(counts)
    with torch.no_grad():
        acc = float((model.module(xte).argmax(1) == yte).float().mean())
    _teardown(model, backend)
    return {"samples_per_s": counts.item() * batch / wall, "time_to_target_s": reached,
            "final_acc": acc, "rank0_steps": steps, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    from torch_distx.bench._spawn import run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=4.0, help="training time per run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--compute-ms", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--target", type=float, default=0.93, help="test accuracy for time-to-target")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--json", help="write results here")
    p.add_argument("--plot", help="write a PNG here (needs matplotlib)")
    a = p.parse_args(argv)
    configs, scenarios = a.configs.split(","), a.scenarios.split(",")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {s: {c: [] for c in configs} for s in scenarios}
    # Interleaved: every config once per repetition, all in the same processes.
    plan = [(c, s, rep) for rep in range(a.reps) for s in scenarios for c in configs]
    kwargs = {"seconds": a.seconds, "compute": a.compute_ms / 1000, "batch": a.batch, "lr": a.lr,
              "target": a.target}
    import os

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        for r in run(4, _all, plan, d, kwargs):
            raw[r["scenario"]][r["config"]].append(r)
    meta = {"loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count()}
    summary: dict[str, Any] = {}
    print(f"\n4 workers, batch {a.batch}, {a.compute_ms:g} ms compute/step, {a.seconds:g} s per run, "
          f"{a.reps} reps (median [min, max]); target accuracy {a.target}; load average "
          f"{meta['loadavg_before'][0]:.1f} before, {meta['loadavg_after'][0]:.1f} after, {meta['cpus']} cpus")
    print("| scenario | config | samples/s | vs ddp-distx | time to target (s) | final acc |")
    print("|---|---|---|---|---|---|")
    for s in scenarios:
        base = statistics.median(r["samples_per_s"] for r in raw[s].get("ddp-distx", raw[s][configs[0]]))
        for c in configs:
            rs = raw[s][c]
            sps = [r["samples_per_s"] for r in rs]
            tt = [r["time_to_target_s"] for r in rs if r["time_to_target_s"] is not None]
            row = {"samples_per_s": {"median": statistics.median(sps), "min": min(sps), "max": max(sps)},
                   "speedup": statistics.median(sps) / base,
                   "time_to_target_s": ({"median": statistics.median(tt), "min": min(tt), "max": max(tt),
                                         "reached": len(tt)} if tt else None),
                   "final_acc": statistics.median(r["final_acc"] for r in rs)}
            summary.setdefault(s, {})[c] = row
            ttt = (f"{row['time_to_target_s']['median']:.2f} [{row['time_to_target_s']['min']:.2f}, "
                   f"{row['time_to_target_s']['max']:.2f}] ({len(tt)}/{len(rs)})" if tt else "not reached")
            print(f"| {s} | {c} | {row['samples_per_s']['median']:.0f} [{min(sps):.0f}, {max(sps):.0f}] | "
                  f"{row['speedup']:.2f}x | {ttt} | {row['final_acc']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "meta": meta, "summary": summary, "raw": raw}, f, indent=1)
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, label in ((axes[0], "samples_per_s", "samples/s (all workers)"),
                               (axes[1], "time_to_target_s", f"seconds to {a.target:.0%} test accuracy")):
            width = 0.8 / len(configs)
            for i, c in enumerate(configs):
                vals, lo, hi = [], [], []
                for s in scenarios:
                    v = summary[s][c][key]
                    m = v["median"] if v else float("nan")
                    vals.append(m)
                    lo.append(m - v["min"] if v else 0)
                    hi.append(v["max"] - m if v else 0)
                xs = [j + i * width for j in range(len(scenarios))]
                ax.bar(xs, vals, width, yerr=[lo, hi], label=c, capsize=3)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scenarios))])
            ax.set_xticklabels(["(a) one worker 3x slower", "(b) 4x jitter, p=1/4"][:len(scenarios)]
                               if scenarios == SCENARIOS else scenarios)
            ax.set_ylabel(label)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"torch_distx.ps vs synchronous DDP, 4 workers, {a.compute_ms:g} ms compute/step")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
