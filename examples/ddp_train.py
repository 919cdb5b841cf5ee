"""Train a small MLP on scikit-learn's digits with DDP over the "distx" backend.

    torchrun --nproc-per-node=2 examples/ddp_train.py [--epochs 20] [--backend gloo]

Each rank trains on its shard of the training set (DistributedSampler); DDP
all-reduces the gradients. Rank 0 prints the mean training loss of every epoch
and, at the end, the accuracy on the held-out 20% (every rank scores a slice).
The digits (1,797 8x8 images) ship inside scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import torch_distx  # noqa: F401  (registers the "distx" backend)


def load_data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixels are 0..16
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))  # same split on every rank
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--backend", default="distx", help="process group backend (distx, gloo, ...)")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()

    dist.init_process_group(backend=args.backend)  # env:// (RANK, WORLD_SIZE, MASTER_ADDR/PORT from torchrun)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    train_set, test_set = load_data()
    sampler = DistributedSampler(train_set, shuffle=True, seed=0)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    if rank == 0:
        print(f"backend {args.backend}, {world} ranks, {len(train_set)} training / {len(test_set)} held-out "
              f"images, {len(sampler)} per rank per epoch", flush=True)

    start = time.time()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on every rank
        model.train()
        stats = torch.zeros(2, dtype=torch.float64)  # (sum of losses, samples) on this rank
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            stats += torch.tensor([loss.item() * len(y), len(y)], dtype=torch.float64)
        dist.all_reduce(stats)
        if rank == 0:
            print(f"epoch {epoch + 1:3d}/{args.epochs}  loss {stats[0] / stats[1]:.4f}", flush=True)

    model.eval()
    x, y = test_set.tensors[0][rank::world], test_set.tensors[1][rank::world]  # each rank scores a slice
    with torch.no_grad():
        correct = torch.tensor([(model(x).argmax(1) == y).sum().item(), len(y)], dtype=torch.int64)
    dist.all_reduce(correct)
    if rank == 0:
        print(f"held-out accuracy: {100.0 * correct[0] / correct[1]:.1f}% "
              f"({correct[0]}/{correct[1]} images) after {time.time() - start:.1f}s of training", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
