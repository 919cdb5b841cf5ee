"""Convergence with gradient compression: DDP trains an MLP on scikit-learn's
digits in WORLD CPU processes with each hook of torch_distx.hooks (or, with
--via switch, the same codecs as the distx group option, no hook), same seeds
and data order, and prints the held-out accuracy per configuration.

    python examples/compression_digits.py [--epochs 40] [--world 4] [--backend distx] [--seed 0]
    python examples/compression_digits.py --via switch [--nodes 2]   # DISTX_HOSTID: 2 "hosts"
"""

import argparse, datetime, hashlib, socket, time  # noqa: E401

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

CONFIGS = ["none", "fp16", "bf16", "topk 1% + EF", "topk 1% no EF"]


def load_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    f = lambda a: torch.tensor(a, dtype=torch.float32) / 16.0  # noqa: E731
    return f(xtr), torch.tensor(ytr), f(xte), torch.tensor(yte)


def make_hook(name: str):
    from torch_distx import hooks

    if name == "fp16":
        return hooks.CastState(), hooks.fp16_hook
    if name == "bf16":
        return hooks.CastState(), hooks.bf16_hook
    return hooks.TopKState(ratio=0.01, error_feedback=name.endswith("+ EF")), hooks.topk_hook


SWITCH = {"none": "none", "fp16": "fp16", "bf16": "bf16", "topk 1% + EF": ("topk:0.01", 1),
          "topk 1% no EF": ("topk:0.01", 0)}


def switch_group(name: str):
    """A distx group that compresses like configuration `name` (torch_distx.Options)."""
    import torch_distx

    spec = SWITCH[name]
    method, ef = spec if isinstance(spec, tuple) else (spec, None)
    return dist.new_group(pg_options=torch_distx.Options(compress=method, compress_ef=ef))


def train(rank: int, world: int, name: str, epochs: int, lr: float, batch: int, seed: int,
          group=None) -> dict:
    xtr, ytr, xte, yte = load_data()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    ddp = DDP(model, process_group=group)
    state = None
    if name != "none" and group is None:
        state, hook = make_hook(name)
        ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = torch.Generator().manual_seed(seed + 1)  # same shuffles on every rank and for every hook
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=order)
        for s in range(len(perm) // (batch * world)):
            idx = perm[(s * world + rank) * batch:(s * world + rank + 1) * batch]
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(xtr[idx]), ytr[idx]).backward()
            opt.step()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    digest = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    digests = [None] * world
    dist.all_gather_object(digests, digest)
    identical = len(set(digests)) == 1  # replicas bit-identical
    dense = 2 * (world - 1) * 4 * sum(p.numel() for p in model.parameters()) // world  # fp32 ring
    if group is not None:  # the switch: its own counters
        import torch_distx

        cs = torch_distx.compression_stats(group)
        steps = epochs * (len(xtr) // (batch * world))
        return {"acc": acc, "seconds": time.perf_counter() - start, "ratio": cs["ratio"] if cs["calls"] else 1.0,
                "mb_per_step": (cs["bytes_after"] / steps if cs["calls"] else dense) / 1e6, "stats": cs,
                "identical": identical}
    st = state.stats if state is not None else None
    return {"acc": acc, "seconds": time.perf_counter() - start, "ratio": st.compression_ratio if st else 1.0,
            "mb_per_step": (st.bytes_sent_per_step if st else dense) / 1e6, "identical": identical}


def worker(rank, world, port, backend, configs, epochs, lr, batch, seed, out, via="hook", nodes=1):
    import os

    import torch_distx  # noqa: F401  (registers "distx")

    torch.set_num_threads(1)
    if nodes > 1:  # ranks split into `nodes` simulated hosts (Note [Topology])
        os.environ["DISTX_HOSTID"] = f"digits-host-{rank * nodes // world}"
    store = dist.TCPStore("127.0.0.1", port, world, rank == 0, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    if via == "switch":
        groups = {name: switch_group(name) for name in configs}  # every rank creates them in one order
        results = {name: train(rank, world, name, epochs, lr, batch, seed, groups[name]) for name in configs}
    else:
        results = {name: train(rank, world, name, epochs, lr, batch, seed) for name in configs}
    if rank == 0:
        out.put(results)
    dist.destroy_process_group()


def run(configs=CONFIGS, epochs=40, world=4, backend="distx", lr=0.05, batch=16, seed=0, via="hook",
        nodes=1) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(worker, args=(world, port, backend, configs, epochs, lr, batch, seed, out, via, nodes),
                       nprocs=world, start_method="spawn")
    return out.get()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--world", type=int, default=4)
    p.add_argument("--backend", default="distx")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--via", choices=["hook", "switch"], default="hook",
                   help="hook: torch_distx.hooks; switch: torch_distx.Options(compress=...) on a distx group")
    p.add_argument("--nodes", type=int, default=1, help="simulated hosts (DISTX_HOSTID), for --via switch")
    args = p.parse_args()
    if args.via == "switch" and args.backend != "distx":
        p.error("--via switch needs --backend distx")
    results = run(epochs=args.epochs, world=args.world, backend=args.backend, seed=args.seed, via=args.via,
                  nodes=args.nodes)
    base = results["none"]["acc"]
    print(f"digits MLP, {args.world} ranks ({args.nodes} node(s)), {args.backend} via {args.via}, "
          f"{args.epochs} epochs, seed {args.seed}")
    print(f"{'config':<16}{'accuracy':>10}{'vs none':>10}{'bytes ratio':>13}{'MB/step':>10}{'time s':>8}")
    for name, r in results.items():
        print(f"{name:<16}{100 * r['acc']:>9.2f}%{100 * (r['acc'] - base):>+9.2f}pt{r['ratio']:>12.1f}x"
              f"{r['mb_per_step']:>10.4f}{r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
