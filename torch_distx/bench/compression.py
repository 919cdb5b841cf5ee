"""Compression benchmark: codec throughput on this CPU, and DDP step time with
each hook against PyTorch's own fp16_compress_hook and powerSGD_hook, on the
same model, in the same run.

    python -m torch_distx.bench compression [--nproc 2] [--sizes 64K,1M,16M]
        [--backends distx,gloo] [--steps 20] [--json out.json] [--skip-ddp]

Codec rows: GB/s counts the dense float32 bytes (4 x count) a kernel consumes
or produces, so encode and decode are comparable; the torch column runs the
closest stock-PyTorch equivalent on the same tensor (x.half(), h.float(),
torch.topk on |x|, index_add_). DDP rows: median step time (forward, backward
with the hook, SGD step) over --steps steps, slowest rank; MB/step is what one
rank sends by the ring cost model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist

from torch_distx.bench import _spawn

_RATIO = 0.01
_RANKS_DECODED = 4  # payloads summed by the top-k decode rows


def _parse_count(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def _time(fn, min_time: float) -> float:
    fn()
    iters, start = 0, time.perf_counter()
    while True:
        fn()
        iters += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and iters >= 3:
            return elapsed / iters


def _codec_rows(counts: list[int], min_time: float) -> list[dict]:
    import torch_distx.ops as ops

    rows = []
    for n in counts:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, generator=g)
        residual = torch.randn(n, generator=g) * 0.1
        work = torch.empty(n)
        k = ops.topk_count(n, _RATIO)
        h, b = x.half(), x.bfloat16()
        payloads = torch.stack([ops.topk_encode(torch.randn(n, generator=g), k) for _ in range(_RANKS_DECODED)])
        idx, vals = ops.topk_unpack(payloads)

        def torch_topk_ef():
            a = x + residual
            i = torch.topk(a.abs(), k, sorted=False).indices
            v = a[i]
            a[i] = 0
            return i, v

        cases = [
            ("fp16 encode", lambda: ops.fp16_encode(x, 0.5), lambda: x.half()),
            ("fp16 decode", lambda: ops.fp16_decode(h), lambda: h.float()),
            ("bf16 encode", lambda: ops.bf16_encode(x, 0.5), lambda: x.bfloat16()),
            ("bf16 decode", lambda: ops.bf16_decode(b), lambda: b.float()),
            ("topk 1% encode", lambda: ops.topk_encode(x, k), lambda: torch.topk(x.abs(), k, sorted=False)),
            # a fresh residual each call (the copy is timed too), as torch's side builds a = x + r
            ("topk 1% encode+EF", lambda: ops.topk_encode_ef(x, work.copy_(residual), k), torch_topk_ef),
            (f"topk decode x{_RANKS_DECODED}", lambda: ops.topk_decode(payloads, n, 0.25),
             lambda: torch.zeros(n).index_add_(0, idx, vals * 0.25)),
        ]
        for name, ours, stock in cases:
            t_ours, t_stock = _time(ours, min_time), _time(stock, min_time)
            rows.append({"codec": name, "count": n, "size": 4 * n, "time": t_ours, "torch_time": t_stock})
    return rows


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _make_model(width: int, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(width, 16))
    return torch.nn.Sequential(*layers)


def _hooks(group):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    import torch_distx.hooks as hooks

    return {
        "allreduce (no hook)": lambda: None,
        "distx fp16_hook": lambda: (hooks.CastState(group), hooks.fp16_hook),
        "distx bf16_hook": lambda: (hooks.CastState(group), hooks.bf16_hook),
        "distx topk_hook 1% EF": lambda: (hooks.TopKState(ratio=_RATIO, warmup_steps=2, process_group=group),
                                          hooks.topk_hook),
        "torch fp16_compress_hook": lambda: (group, default_hooks.fp16_compress_hook),
        "torch powerSGD_hook r=4": lambda: (powerSGD_hook.PowerSGDState(group, matrix_approximation_rank=4,
                                                                        start_powerSGD_iter=2),
                                            powerSGD_hook.powerSGD_hook),
    }


# PyTorch's powerSGD_hook issues its second and third all-reduce from inside
# future callbacks, which run on the backend's threads concurrently with DDP
# launching the next bucket; with more than one bucket the ranks' collectives
# can then come in different orders (we saw gloo abort with a size mismatch).
# Hence one bucket by default (--bucket-mb).


def _ddp_body(rank: int, nproc: int, backends: list[str], width: int, depth: int, batch: int, steps: int,
              bucket_mb: float) -> dict:
    import torch_distx  # noqa: F401
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    dist.init_process_group("distx")
    groups = {"distx": dist.group.WORLD, "gloo": dist.new_group(backend="gloo")}
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, width, generator=g), torch.randn(batch, 16, generator=g)
    rows = []
    for backend in backends:
        group = groups[backend]
        for name, make in _hooks(group).items():
            model = _make_model(width, depth)
            ddp = DDP(model, process_group=group, bucket_cap_mb=bucket_mb)
            made = make()
            if made is not None:
                ddp.register_comm_hook(*made)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            times, before = [], None
            stats = getattr(made[0], "stats", None) if made else None
            for i in range(5 + steps):
                if i == 5 and stats is not None:  # steady state: after warm-up and DDP's bucket rebuild
                    before = (stats.sent_bytes, stats.dense_bytes, stats.compress_seconds)
                dist.barrier(group=group)
                start = time.perf_counter()
                opt.zero_grad()
                (ddp(x) - y).square().mean().backward()
                opt.step()
                if i >= 5:
                    times.append(time.perf_counter() - start)
            t = torch.tensor([statistics.median(times)], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
            row = {"hook": name, "backend": backend, "time": t.item(), "sent_per_step": None, "ratio": None,
                   "compress_ms": None}
            if stats is not None:
                sent, dense = stats.sent_bytes - before[0], stats.dense_bytes - before[1]
                row.update(sent_per_step=sent / steps, ratio=dense / sent,
                           compress_ms=1e3 * (stats.compress_seconds - before[2]) / steps)
            elif hasattr(made[0] if made else None, "compression_stats"):
                row["ratio"] = made[0].compression_stats()[0]
            rows.append(row)
    params = sum(p.numel() for p in _make_model(width, depth).parameters())
    dist.destroy_process_group()
    return {"rows": rows, "params": params}


def _print_codecs(rows: list[dict]) -> None:
    print(f"# codec throughput, 1 process, {torch.get_num_threads()} torch thread(s), GB/s of dense float32 "
          f"on {_cpu_name()}")
    print(f"{'codec':<20} {'size':>10} {'count':>10} {'time_us':>10} {'GB/s':>7} | {'torch time_us':>13} "
          f"{'GB/s':>7} | {'speedup':>7}")
    for r in rows:
        print(f"{r['codec']:<20} {r['size']:>10} {r['count']:>10} {r['time'] * 1e6:>10.1f} "
              f"{r['size'] / r['time'] / 1e9:>7.2f} | {r['torch_time'] * 1e6:>13.1f} "
              f"{r['size'] / r['torch_time'] / 1e9:>7.2f} | {r['torch_time'] / r['time']:>6.2f}x")


def _print_ddp(result: dict, nproc: int, args) -> None:
    params = result["params"]
    dense = 2 * (nproc - 1) * 4 * params // nproc
    print(f"\n# DDP step time: MLP {args.depth}x{args.width} ({params / 1e6:.1f}M params, {4 * params / 1e6:.1f} MB "
          f"fp32 grads), batch {args.batch}/rank, {nproc} processes, median of {args.steps} steps, slowest rank")
    print(f"{'hook':<26} {'backend':<7} {'step_ms':>8} {'vs no hook':>10} {'MB/step':>8} {'ratio':>6} "
          f"{'compress_ms':>11}")
    base = {r["backend"]: r["time"] for r in result["rows"] if r["hook"].startswith("allreduce")}
    for r in result["rows"]:
        ratio = r["ratio"] if r["ratio"] is not None else (2.0 if "fp16" in r["hook"] else 1.0)
        sent = r["sent_per_step"] if r["sent_per_step"] is not None else dense / ratio
        cms = f"{r['compress_ms']:11.2f}" if r.get("compress_ms") is not None else f"{'-':>11}"
        print(f"{r['hook']:<26} {r['backend']:<7} {r['time'] * 1e3:>8.1f} {base[r['backend']] / r['time']:>9.2f}x "
              f"{sent / 1e6:8.2f} {ratio:>5.1f}x {cms}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m torch_distx.bench compression", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="64K,1M,16M", help="element counts for the codec rows")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per codec measurement")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the codec rows (1: per-core numbers, immune to OpenMP "
                        "waits on a shared machine; 0: torch's default)")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--backends", default="distx,gloo")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--bucket-mb", type=float, default=64.0,
                   help="DDP bucket_cap_mb; the default keeps the model in one bucket (see the note on powerSGD_hook)")
    p.add_argument("--skip-ddp", action="store_true")
    p.add_argument("--json", help="write the results as JSON here")
    args = p.parse_args(argv)

    import torch_distx.ops  # noqa: F401

    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"torch": torch.__version__, "codecs": _codec_rows(
        [_parse_count(s) for s in args.sizes.split(",")], args.min_time)}
    _print_codecs(result["codecs"])
    if not args.skip_ddp:
        backends = [b for b in args.backends.split(",") if b]
        result["ddp"] = _spawn.run(args.nproc, _ddp_body, backends, args.width, args.depth, args.batch, args.steps,
                                   args.bucket_mb)
        _print_ddp(result["ddp"], args.nproc, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0
