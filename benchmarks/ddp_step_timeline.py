"""Where a DDP step's time goes on the multi-host testbed, bucket by bucket.

    sudo .venv/bin/python benchmarks/ddp_step_timeline.py [--rate 1gbit] \\
        [--configs distx,distx-fp16,distx-bf16,distx-topk,distx-hook-fp16,distx-hook-topk] \
        [--hidden 2560] [--steps 12] [--reps 3] [--warmup 11] [--json out.json]

2 hosts x 2 ranks, links throttled both ways (tests/multihost/testbed.py), the
MLP of compression_multihost.py (64-H-H-H-10, 13.3 M parameters at H = 2560,
DDP's default 25 MB buckets), configurations interleaved as there. Each
configuration's DDP carries a comm hook that does what DDP does without one
(divide by the world size, all_reduce SUM on the group, so the compression
switch applies exactly as without the hook) and records when DDP handed it
each bucket (`ready`) and when that bucket's all-reduce finished (`done`),
from the step's start; the step also records the end of the forward pass,
of backward (which waits for every bucket) and of the optimizer step. The
`distx-hook-*` configurations (not in the default list) time
torch_distx.hooks.fp16_hook / topk_hook (ratio 0.01) on an uncompressed
group the same way; they have no bare row.

Columns (ms from the step's start, median over the timed steps of the
slowest rank): fwd, ready0 (the first bucket handed over: the link cannot be
busy before it), ready_last, done0 (first bucket done), done_last, step;
then MB_link (bytes the busiest host sent per step, eth0's counter),
link_MBps (MB_link / (done_last - ready0): how fast the link ran while the
step had something to send), at_rate_ms (ready0 + MB_link at the line rate +
step - done_last: the step with the link at line rate from the first bucket
on, every other part as measured) and bound_x (distx's at_rate_ms over this
configuration's: the speed-up over uncompressed distx no implementation of
the same bytes can beat on this model and machine).

A second table puts each bucket's all-reduce in the step (from when it could
start: handed over, and the previous bucket done, since the worker runs them
in order) next to the same buckets' all-reduces run back to back with no
compute (`bare`, interleaved the same way after the steps): the difference
is what sharing the CPU with the backward pass and the step costs the
communication.
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

HERE = os.path.dirname(os.path.abspath(__file__))
SWITCH = {"distx": "none", "distx-fp16": "fp16", "distx-bf16": "bf16", "distx-topk": "topk:0.01",
          "distx-hook-fp16": "none", "distx-hook-topk": "none"}


def worker(a: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import torch_distx
    from torch_distx import hooks

    sys.path.insert(0, HERE)
    from compression_multihost import _data, mlp

    torch.set_num_threads(1)
    dist.init_process_group("distx")
    rank, ws = dist.get_rank(), dist.get_world_size()
    gloo = dist.new_group(backend="gloo")
    xtr, ytr, _, _ = _data()
    runs = {}
    for name in a.configs:
        model = mlp(a.hidden, a.seed)
        group = dist.new_group(pg_options=torch_distx.Options(compress=SWITCH[name]))
        ddp = DDP(model, process_group=group, bucket_cap_mb=25)
        r = {"ddp": ddp, "opt": torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9), "events": {},
             "t0": 0.0, "rows": [], "sizes": {}, "bare": [], "group": group}

        inner = None  # the distx hook a hook configuration times
        if name == "distx-hook-fp16":
            inner = (hooks.CastState(group), hooks.fp16_hook)
        elif name == "distx-hook-topk":
            inner = (hooks.TopKState(ratio=0.01, process_group=group), hooks.topk_hook)

        def hook(r, bucket, group=group, inner=inner):
            i = bucket.index()
            r["events"][f"ready{i}"] = time.perf_counter() - r["t0"]
            r["sizes"][i] = bucket.buffer().numel()
            if inner:
                fut = inner[1](inner[0], bucket)
            else:
                buf = bucket.buffer().div_(ws)
                fut = dist.all_reduce(buf, group=group, async_op=True).get_future()

            def done(f, i=i):
                r["events"][f"done{i}"] = time.perf_counter() - r["t0"]
                v = f.value()
                return v[0] if isinstance(v, list) else v

            return fut.then(done)

        ddp.register_comm_hook(r, hook)
        runs[name] = r

    def step(r, s: int) -> dict:
        idx = torch.arange((s * ws + rank) * a.batch, (s * ws + rank + 1) * a.batch) % len(xtr)
        dist.barrier(group=gloo)
        r["events"].clear()
        tx0 = launch.tx_bytes()
        r["t0"] = time.perf_counter()
        r["opt"].zero_grad()
        loss = nn.functional.cross_entropy(r["ddp"](xtr[idx]), ytr[idx])
        ev = r["events"]
        ev["fwd"] = time.perf_counter() - r["t0"]
        loss.backward()
        r["opt"].step()
        ev["step"] = time.perf_counter() - r["t0"]
        ev["tx"] = float(launch.tx_bytes() - tx0)
        keys = sorted(ev)
        vals = torch.tensor([ev[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(vals, op=dist.ReduceOp.MAX, group=gloo)  # the slowest rank, the busiest host
        return dict(zip(keys, vals.tolist()))

    for r in runs.values():  # untimed: DDP's bucket rebuild
        for s in range(a.warmup):
            step(r, s)
    names = list(a.configs)
    for rep in range(a.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            for s in range(a.steps):
                runs[name]["rows"].append(step(runs[name], a.warmup + rep * a.steps + s))
    def bare(r) -> dict:
        # The same buckets' all-reduces back to back with no compute: what the
        # link and the backend do alone.
        # Random values (a constant vector is top-k's worst case: every key ties).
        gen = torch.Generator().manual_seed(rank)
        bufs = [torch.randn(r["sizes"][i], generator=gen) * 1e-3 for i in sorted(r["sizes"])]
        ev, futs = {}, []
        dist.barrier(group=gloo)
        t0 = time.perf_counter()
        for i, buf in enumerate(bufs):
            fut = dist.all_reduce(buf, group=r["group"], async_op=True).get_future()
            futs.append(fut.then(lambda f, i=i: ev.__setitem__(f"done{i}", time.perf_counter() - t0)))
        for f in futs:
            f.wait()
        keys = sorted(ev)
        vals = torch.tensor([ev[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(vals, op=dist.ReduceOp.MAX, group=gloo)
        return dict(zip(keys, vals.tolist()))

    for rep in range(a.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            if "hook" not in name:  # a hook has no bare all-reduce to compare with
                for s in range(a.steps):
                    runs[name]["bare"].append(bare(runs[name]))
    if rank == 0:
        with open(a.out, "w") as f:
            json.dump({name: {"steps": r["rows"], "bare": r["bare"]} for name, r in runs.items()}, f)
    dist.barrier(group=gloo)
    dist.destroy_process_group()


def _bucket_ms(steps: list[dict], n: int, in_step: bool) -> list[float]:
    """Median time of each bucket's all-reduce alone: from when it could start (its
    ready time, and the previous bucket done: the worker runs them in order) to done."""
    out = []
    for i in range(n):
        def one(s):
            start = s[f"done{i - 1}"] if i else 0.0
            if in_step:
                start = max(start, s[f"ready{i}"])
            return s[f"done{i}"] - start
        out.append(statistics.median(one(s) for s in steps))
    return out


def summarise(raw: dict, rate_bits: float) -> list[dict]:
    rows = []
    for name, r in raw.items():
        steps = r["steps"]
        med = lambda k: statistics.median(s[k] for s in steps)  # noqa: E731
        n = sum(1 for k in steps[0] if k.startswith("ready"))
        ready0, done_last, step = med("ready0"), med(f"done{n - 1}"), med("step")
        mb = med("tx") / 1e6
        rows.append({"config": name, "fwd": med("fwd"), "ready0": ready0, "ready_last": med(f"ready{n - 1}"),
                     "done0": med("done0"), "done_last": done_last, "step": step,
                     "min_step": min(s["step"] for s in steps), "max_step": max(s["step"] for s in steps),
                     "mb_link": mb, "link_mbps": mb / (done_last - ready0),
                     "at_rate": ready0 + mb * 8e6 / rate_bits + (step - done_last),
                     "bucket_ms": _bucket_ms(steps, n, True),
                     "bare_ms": _bucket_ms(r["bare"], n, False) if r["bare"] else [None] * n})
    base = next((r for r in rows if r["config"] == "distx"), None)
    for r in rows:
        r["x_distx"] = base["step"] / r["step"] if base else None
        r["bound_x"] = base["at_rate"] / r["at_rate"] if base else None
    return rows


def print_table(rate: str, rows: list[dict]) -> None:
    print(f"\n# DDP step timeline, 2 hosts x 2 ranks, links {rate}; ms from the step's start, medians")
    cols = ["fwd", "ready0", "ready_last", "done0", "done_last", "step"]
    print(f"{'config':<16}" + "".join(f"{c:>11}" for c in cols)
          + f"{'x_distx':>9}{'MB_link':>9}{'link_MBps':>11}{'at_rate_ms':>12}{'bound_x':>9}")
    for r in rows:
        x = f"{r['x_distx']:9.2f}" if r["x_distx"] else f"{'-':>9}"
        b = f"{r['bound_x']:9.2f}" if r["bound_x"] else f"{'-':>9}"
        print(f"{r['config']:<16}" + "".join(f"{1e3 * r[c]:11.0f}" for c in cols)
              + f"{x}{r['mb_link']:9.1f}{r['link_mbps']:11.0f}{1e3 * r['at_rate']:12.0f}{b}")
    print("\n# each bucket's all-reduce, ms: in the step (from max(ready, previous done) to done) "
          "vs the same buckets back to back with no compute (bare)")
    for r in rows:
        pairs = "  ".join(f"b{i} {1e3 * s:.0f} / bare " + (f"{1e3 * b:.0f}" if b is not None else "-")
                          for i, (s, b) in enumerate(zip(r["bucket_ms"], r["bare_ms"])))
        print(f"{r['config']:<16}{pairs}   tail after the last bucket {1e3 * (r['step'] - r['done_last']):.0f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", default="1gbit")
    p.add_argument("--configs", default="distx,distx-fp16,distx-bf16,distx-topk")
    p.add_argument("--hidden", type=int, default=2560)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=11,
                   help="untimed steps per configuration first (topk_hook sends dense for 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    launch.add_worker_options(p)
    a = p.parse_args(argv)
    a.configs = a.configs.split(",") if isinstance(a.configs, str) else a.configs
    unknown = [c for c in a.configs if c not in SWITCH]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {list(SWITCH)}")
    return launch.run(a, worker, _orchestrate, "ddp_step_timeline")


def _orchestrate(a: argparse.Namespace, testbed: ModuleType) -> int:
    with testbed.Testbed(2, a.rate) as tb, tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "timeline.json")
        args = ["--configs", ",".join(a.configs), "--hidden", str(a.hidden),
                "--batch", str(a.batch), "--steps", str(a.steps), "--reps", str(a.reps), "--warmup", str(a.warmup),
                "--seed", str(a.seed)]
        env = dict(os.environ, OMP_NUM_THREADS="1", DISTX_COMPRESS="")
        raw = launch.run_workers(tb, __file__, out, args, nproc_per_host=2, env=env, timeout=1800)
        if raw is None:
            return 1
        rows = summarise(raw, tb.rate_bits)
    print_table(a.rate, rows)
    if a.json:
        meta = {"rate": a.rate, "hidden": a.hidden, "batch": a.batch, "steps": a.steps, "reps": a.reps,
                "cpu": os.cpu_count(), "load": os.getloadavg()}
        launch.write_json(a.json, {"meta": meta, "rows": rows, "raw": raw})
    return 0


if __name__ == "__main__":
    sys.exit(main())
