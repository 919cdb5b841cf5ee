"""Lightning DDP over distx: the one line is DDPStrategy(process_group_backend="distx").

    python -m torch.distributed.run --standalone --nproc-per-node=2 examples/lightning_ddp.py
    python examples/lightning_ddp.py            # Lightning starts the 2 processes itself

Trains a linear model for a few full-batch steps on 2 CPU processes, then
checks that every rank holds the same weights and that they match the same
steps replayed in one process without distribution (the oracle).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

import torch_distx  # noqa: F401  (registers "distx")

WORLD, STEPS, LR = 2, 4, 0.1


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    return TensorDataset(x, x @ torch.arange(1.0, 9.0) + 0.5)


def model() -> torch.nn.Linear:
    torch.manual_seed(1)
    return torch.nn.Linear(8, 1)


class Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = model()

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).squeeze(1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


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
    module = Regression()
    trainer = L.Trainer(accelerator="cpu", devices=WORLD, strategy=DDPStrategy(process_group_backend="distx"),
                        max_epochs=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    loader = DataLoader(data(), batch_size=64 // WORLD, shuffle=False)  # one step per epoch
    trainer.fit(module, loader)
    assert dist.get_backend() == "distx", dist.get_backend()
    mine = torch.cat([p.detach().flatten() for p in module.parameters()])
    everyone = [torch.empty_like(mine) for _ in range(WORLD)]
    dist.all_gather(everyone, mine)
    assert all(torch.equal(w, mine) for w in everyone), "ranks disagree"
    torch.testing.assert_close(mine, replay(), rtol=1e-5, atol=1e-6)
    print(f"rank {dist.get_rank()}: lightning DDP on {dist.get_backend()}: weights match the replay: OK", flush=True)


if __name__ == "__main__":
    main()
