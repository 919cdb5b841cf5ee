"""Hugging Face Accelerate over distx: create the process group yourself,
before the Accelerator; Accelerate then uses it.

    python -m torch.distributed.run --standalone --nproc-per-node=2 examples/accelerate_ddp.py

(`InitProcessGroupKwargs(backend="distx")` is refused by Accelerate 1.15,
which accepts only gloo or mpi by name on CPU.) Trains a linear model for a
few full-batch steps, then checks that every rank holds the same weights and
that they match the same steps replayed in one process (the oracle).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

import torch_distx  # noqa: F401  (registers "distx")

STEPS, LR = 4, 0.1


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    return TensorDataset(x, x @ torch.arange(1.0, 9.0) + 0.5)


def model() -> torch.nn.Linear:
    torch.manual_seed(1)
    return torch.nn.Linear(8, 1)


def replay() -> torch.Tensor:
    """The same steps in one process: each step's batch is the union of the ranks' batches."""
    net, (x, y) = model(), data().tensors
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x).squeeze(1), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def main() -> None:
    dist.init_process_group("distx")  # env:// from torchrun; must come before Accelerator()
    accelerator = Accelerator(cpu=True)
    world = accelerator.num_processes
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loader = DataLoader(data(), batch_size=64 // world, shuffle=False)  # one step per epoch
    net, opt, loader = accelerator.prepare(net, opt, loader)
    for _ in range(STEPS):
        for x, y in loader:
            opt.zero_grad()
            accelerator.backward(torch.nn.functional.mse_loss(net(x).squeeze(1), y))
            opt.step()
    assert dist.get_backend() == "distx", dist.get_backend()
    mine = torch.cat([p.detach().flatten() for p in accelerator.unwrap_model(net).parameters()])
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    assert all(torch.equal(w, mine) for w in everyone), "ranks disagree"
    torch.testing.assert_close(mine, replay(), rtol=1e-5, atol=1e-6)
    print(f"rank {dist.get_rank()}: accelerate ({accelerator.distributed_type}) on {dist.get_backend()}: "
          f"weights match the replay: OK", flush=True)
    accelerator.end_training()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
