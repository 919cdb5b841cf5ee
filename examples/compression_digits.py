"""Convergence with gradient compression: DDP trains an MLP on scikit-learn's
digits in WORLD CPU processes with each hook of torch_distx.hooks, same seeds
and data order, and prints the held-out accuracy per hook.

    python examples/compression_digits.py [--epochs 40] [--world 4] [--backend distx] [--seed 0]
"""

import argparse, datetime, socket, time  # noqa: E401

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


def train(rank: int, world: int, name: str, epochs: int, lr: float, batch: int, seed: int) -> dict:
    xtr, ytr, xte, yte = load_data()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    ddp = DDP(model)
    state = None
    if name != "none":
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
    dense = 2 * (world - 1) * 4 * sum(p.numel() for p in model.parameters()) // world  # fp32 ring
    st = state.stats if state is not None else None
    return {"acc": acc, "seconds": time.perf_counter() - start, "ratio": st.compression_ratio if st else 1.0,
            "mb_per_step": (st.bytes_sent_per_step if st else dense) / 1e6}


def worker(rank, world, port, backend, configs, epochs, lr, batch, seed, out):
    import torch_distx  # noqa: F401  (registers "distx")

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, world, rank == 0, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    results = {name: train(rank, world, name, epochs, lr, batch, seed) for name in configs}
    if rank == 0:
        out.put(results)
    dist.destroy_process_group()


def run(configs=CONFIGS, epochs=40, world=4, backend="distx", lr=0.05, batch=16, seed=0) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(worker, args=(world, port, backend, configs, epochs, lr, batch, seed, out), nprocs=world,
                       start_method="spawn")
    return out.get()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--world", type=int, default=4)
    p.add_argument("--backend", default="distx")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    results = run(epochs=args.epochs, world=args.world, backend=args.backend, seed=args.seed)
    base = results["none"]["acc"]
    print(f"digits MLP, {args.world} ranks, {args.backend}, {args.epochs} epochs, seed {args.seed}")
    print(f"{'hook':<16}{'accuracy':>10}{'vs none':>10}{'bytes ratio':>13}{'MB/step':>10}{'time s':>8}")
    for name, r in results.items():
        print(f"{name:<16}{100 * r['acc']:>9.2f}%{100 * (r['acc'] - base):>+9.2f}pt{r['ratio']:>12.1f}x"
              f"{r['mb_per_step']:>10.4f}{r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
