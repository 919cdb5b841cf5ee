"""DDP with gradient compression across simulated hosts on throttled links.

    sudo .venv/bin/python benchmarks/compression_multihost.py \\
        [--rates 100mbit,1gbit,10gbit] [--hidden 2560] [--steps 12] [--reps 3] \\
        [--configs distx,distx-fp16,distx-bf16,distx-topk,distx-fp16-all,distx-topk-all,distx-hook-fp16,distx-hook-topk,gloo,gloo-torch-fp16,gloo-powersgd] \\
        [--json out.json] [--plot out.png]

For every rate the testbed (tests/multihost/testbed.py) makes 2 network-namespace
hosts whose links are throttled both ways, and torchrun starts 2 ranks per host
(2x2). Every rank builds the same MLP on scikit-learn's digits (64-H-H-H-10;
H = 2560 gives 13.3 M parameters, 53 MB of float32 gradients per step) once per
configuration, with the same seed, and trains them all in one run, interleaved:
each repetition runs `steps` steps of every configuration, in a rotated order,
after `warmup` untimed steps of each (DDP's bucket rebuild; the hooks' dense
warm-up).

Configurations:
  distx              DDP on a distx group, no compression
  distx-fp16/-bf16   the group switch: torch_distx.Options(compress="fp16"/"bf16")
  distx-topk         the group switch: Options(compress="topk:0.01"), error feedback
  distx-*-all        the same with compress_scope="all": every stage compressed
                     (the flat path, as the hooks do), not only the inter-node one
  distx-hook-fp16    torch_distx.hooks.fp16_hook on an uncompressed distx group
  distx-hook-topk    torch_distx.hooks.topk_hook (TopKState(ratio=0.01)) on distx
  gloo               DDP on a gloo group
  gloo-torch-fp16    PyTorch's fp16_compress_hook on gloo
  gloo-powersgd      PyTorch's powerSGD_hook (rank 4, 10 dense warm-up steps) on gloo;
                     one bucket (its callbacks issue collectives, see docs/compression.md)
  no-comm            DDP with a hook that returns each bucket untouched: no gradient
                     traffic at all, the step's compute under the same CPU sharing; the
                     floor no compression can go below (its ranks train apart, so its
                     accuracy is not comparable)

Columns: step_ms (median of the slowest rank's step time over the timed steps,
[min, max]), x_distx (uncompressed distx step / this step), MB_link (bytes the
busiest host sent on its link per step: eth0's counter, headers and ACKs
included), acc (held-out accuracy after all the run's steps), tta_s (time to
accuracy: steps until the held-out accuracy first reached --target, evaluated
every --eval-every steps, times the median step time; '-' when not reached).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from types import ModuleType

import _testbed_launch as launch

CONFIGS = ["distx", "distx-fp16", "distx-bf16", "distx-topk", "distx-fp16-all", "distx-topk-all",
           "distx-hook-fp16", "distx-hook-topk", "gloo", "gloo-torch-fp16", "gloo-powersgd", "no-comm"]


# ---- rank side (runs under torchrun on a testbed host) --------------------------


def _data():
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    f = lambda a: torch.tensor(a, dtype=torch.float32) / 16.0  # noqa: E731
    return f(xtr), torch.tensor(ytr), f(xte), torch.tensor(yte)


def mlp(hidden: int, seed: int):
    """64-H-H-H-10 on the digits (also ddp_step_timeline.py's model)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _make(name: str, hidden: int, seed: int):
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    import torch_distx
    from torch_distx import hooks

    model = mlp(hidden, seed)
    switch = {"distx-fp16": "fp16", "distx-bf16": "bf16", "distx-topk": "topk:0.01",
              "distx-fp16-all": "fp16", "distx-topk-all": "topk:0.01"}
    if name.startswith("gloo"):
        group = dist.new_group(backend="gloo")
    else:
        scope = "all" if name.endswith("-all") else None
        group = dist.new_group(pg_options=torch_distx.Options(compress=switch.get(name, "none"),
                                                              compress_scope=scope))
    bucket = 1000 if name == "gloo-powersgd" else 25
    ddp = DDP(model, process_group=group, bucket_cap_mb=bucket)
    if name == "distx-hook-fp16":
        ddp.register_comm_hook(hooks.CastState(group), hooks.fp16_hook)
    elif name == "distx-hook-topk":
        ddp.register_comm_hook(hooks.TopKState(ratio=0.01, process_group=group), hooks.topk_hook)
    elif name == "gloo-torch-fp16":
        ddp.register_comm_hook(group, default_hooks.fp16_compress_hook)
    elif name == "no-comm":
        def local_only(_state, bucket):
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, local_only)
    elif name == "gloo-powersgd":
        state = powerSGD_hook.PowerSGDState(process_group=group, matrix_approximation_rank=4,
                                            start_powerSGD_iter=10, min_compression_rate=2, random_seed=seed)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    return {"model": model, "ddp": ddp, "opt": opt, "group": group, "times": [], "tx": [], "evals": [],
            "order": torch.Generator().manual_seed(seed + 1), "step": 0}


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    import torch_distx

    torch.set_num_threads(1)
    dist.init_process_group("distx")
    rank, ws = dist.get_rank(), dist.get_world_size()
    gloo = dist.new_group(backend="gloo")
    xtr, ytr, xte, yte = _data()
    runs = {name: _make(name, args.hidden, args.seed) for name in args.configs}
    batch = args.batch

    def evaluate(r) -> float:
        with torch.no_grad():
            return (r["model"](xte).argmax(1) == yte).float().mean().item()

    def step(r) -> None:
        if r["step"] % (len(xtr) // (batch * ws)) == 0:
            r["perm"] = torch.randperm(len(xtr), generator=r["order"])
        s = r["step"] % (len(xtr) // (batch * ws))
        idx = r["perm"][(s * ws + rank) * batch:(s * ws + rank + 1) * batch]
        r["opt"].zero_grad()
        nn.functional.cross_entropy(r["ddp"](xtr[idx]), ytr[idx]).backward()
        r["opt"].step()
        r["step"] += 1

    names = list(args.configs)
    for r in runs.values():  # untimed: DDP's bucket rebuild, the hooks' dense warm-up steps
        for _ in range(args.warmup):
            step(r)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            r = runs[name]
            for _ in range(args.steps):
                dist.barrier(group=gloo)
                tx0, t0 = launch.tx_bytes(), time.perf_counter()
                step(r)
                dt = torch.tensor([time.perf_counter() - t0])
                tx = launch.tx_bytes() - tx0
                dist.all_reduce(dt, op=dist.ReduceOp.MAX, group=gloo)
                txs = torch.tensor([float(tx)])
                dist.all_reduce(txs, op=dist.ReduceOp.MAX, group=gloo)
                r["times"].append(dt.item())
                r["tx"].append(txs.item())  # the busiest host's link (its ranks share eth0)
                if r["step"] % args.eval_every == 0:
                    r["evals"].append((r["step"], evaluate(r)))
    out = {}
    for name, r in runs.items():
        st = torch_distx.compression_stats(r["group"]) if name.startswith("distx") else None
        out[name] = {"times": r["times"], "tx": r["tx"], "evals": r["evals"], "acc": evaluate(r),
                     "steps": r["step"], "stats": st}
    if rank == 0:
        params = sum(p.numel() for p in runs[names[0]]["model"].parameters())
        with open(args.out, "w") as f:
            json.dump({"runs": out, "params": params, "world": ws}, f)
    dist.barrier(group=gloo)
    dist.destroy_process_group()


# ---- parent side ----------------------------------------------------------------------


def _summarise(raw: dict, target: float) -> list[dict]:
    rows = []
    base = statistics.median(raw["runs"]["distx"]["times"]) if "distx" in raw["runs"] else None
    for name, r in raw["runs"].items():
        med = statistics.median(r["times"])
        reached = next((s for s, a in r["evals"] if a >= target), None)
        st = r.get("stats") or {}
        rows.append({"config": name, "step_ms": 1e3 * med, "min_ms": 1e3 * min(r["times"]),
                     "max_ms": 1e3 * max(r["times"]), "x_distx": base / med if base else None,
                     "mb_link": statistics.median(r["tx"]) / 1e6, "acc": r["acc"], "steps": r["steps"],
                     "steps_to_target": reached, "tta_s": reached * med if reached else None,
                     "ratio": st.get("ratio"), "fallbacks": st.get("fallbacks")})
    return rows


def _print_table(rate: str, rows: list[dict], params: int, target: float) -> None:
    print(f"\n# DDP step, 2 hosts x 2 ranks, links {rate}, MLP {params / 1e6:.1f} M params; "
          f"tta = time to {100 * target:.0f} % held-out accuracy")
    print(f"{'config':<18}{'step_ms':>9}{'[min':>9}{'max]':>9}{'x_distx':>9}{'MB_link':>9}{'acc':>8}{'tta_s':>8}")
    for r in rows:
        tta = f"{r['tta_s']:8.1f}" if r["tta_s"] is not None else f"{'-':>8}"
        x = f"{r['x_distx']:9.2f}" if r["x_distx"] else f"{'-':>9}"
        print(f"{r['config']:<18}{r['step_ms']:9.0f}{r['min_ms']:9.0f}{r['max_ms']:9.0f}{x}{r['mb_link']:9.1f}"
              f"{100 * r['acc']:7.1f}%{tta}")


def _plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(results)
    configs = [r["config"] for r in results[rates[0]]["rows"]]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(rates)
    for i, rate in enumerate(rates):
        ms = {r["config"]: r["step_ms"] for r in results[rate]["rows"]}
        ax.bar([c + i * width for c in range(len(configs))], [ms[c] for c in configs], width, label=rate)
    ax.set_xticks([c + width * (len(rates) - 1) / 2 for c in range(len(configs))])
    ax.set_xticklabels(configs, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("DDP step time, ms (median)")
    ax.set_title("DDP step, 2 hosts x 2 ranks, throttled links")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="100mbit,1gbit,10gbit")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--hidden", type=int, default=2560)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=12, help="timed steps per configuration and repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=11,
                   help="untimed steps per configuration first (topk_hook and PowerSGD send dense for 10)")
    p.add_argument("--eval-every", type=int, default=6)
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--json")
    p.add_argument("--plot")
    launch.add_worker_options(p)
    a = p.parse_args(argv)
    a.configs = a.configs.split(",") if isinstance(a.configs, str) else a.configs
    return launch.run(a, worker, _orchestrate, "compression_multihost")


def _orchestrate(a: argparse.Namespace, testbed: ModuleType) -> int:
    results: dict = {}
    with testbed.Testbed(2, None) as tb, tempfile.TemporaryDirectory() as tmp:
        for rate in a.rates.split(","):
            tb.set_rate(rate)
            out = os.path.join(tmp, f"{rate}.json")
            args = ["--configs", ",".join(a.configs), "--hidden", str(a.hidden),
                    "--batch", str(a.batch), "--steps", str(a.steps), "--reps", str(a.reps),
                    "--eval-every", str(a.eval_every), "--seed", str(a.seed), "--warmup", str(a.warmup)]
            env = dict(os.environ, OMP_NUM_THREADS="1", DISTX_COMPRESS="")
            t0 = time.time()
            raw = launch.run_workers(tb, __file__, out, args, nproc_per_host=2, env=env, timeout=a.timeout)
            if raw is None:
                return 1
            rows = _summarise(raw, a.target)
            results[rate] = {"rows": rows, "params": raw["params"], "seconds": time.time() - t0}
            _print_table(rate, rows, raw["params"], a.target)
            sys.stdout.flush()
    meta = {"hosts": 2, "ranks_per_host": 2, "steps": a.steps, "reps": a.reps, "hidden": a.hidden,
            "batch": a.batch, "target": a.target, "cpu": os.cpu_count(), "load": os.getloadavg()}
    launch.write_outputs(a, {"meta": meta, "results": results}, lambda path: _plot(results, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
