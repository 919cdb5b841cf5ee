"""A worker's view of the parameter server: push/pull of a flat float32
parameter vector, and checkpoints of the shards."""

from __future__ import annotations

import datetime
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist

from . import _checkpoint
from ._config import DEFAULT_CHUNK_BYTES, MODES, optimizer_config, parse_compression, roles
from ._node import make_node, to_backend_error


class PsClient:
    """The direct push/pull API (no DDP): a worker's view of the parameter
    server for a list of float32 CPU tensors. Collective to create (every rank of
    the default group; server ranks call :func:`serve`).

    ``push(update, lr)`` starts a push of ``update`` (a flat tensor or a list
    shaped like the parameters: deltas in mode "delta", gradients in "server")
    at clock + 1 together with the pull of that clock, and returns at once;
    ``wait()`` blocks until the pull is answered and writes the parameters.
    ``compression`` (``"fp16"``, ``"bf16"``, ``"topk:<ratio>"``) encodes every push
    with that csrc/compression codec; top-k keeps its error-feedback residual
    per chunk on this worker (docs/ps.md).
    """

    def __init__(self, params: Iterable[torch.Tensor], *, mode: str = "delta", staleness: int = 0,
                 servers: int = 0, optimizer: torch.optim.Optimizer | None = None,
                 compression: str | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 timeout: datetime.timedelta | float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"ps: mode must be one of {MODES}, got {mode!r}")
        if not isinstance(staleness, int) or staleness < -1:
            raise ValueError(f"ps: staleness must be an int >= -1 (-1 = asynchronous), got {staleness!r}")
        if chunk_bytes < 4:
            raise ValueError(f"ps: chunk_bytes must be >= 4, got {chunk_bytes}")
        parse_compression(compression)  # refuses a bad spec before any collective
        self.compression = compression
        self.params = [p for p in params]
        for p in self.params:
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise ValueError(f"ps: parameters must be float32 CPU tensors, got {p.dtype} on {p.device}")
        self.mode = mode
        self.staleness = staleness
        self.servers = servers
        workers, _ = roles(servers)
        if dist.get_rank() not in workers:
            raise ValueError(f"ps: rank {dist.get_rank()} is a server rank; call torch_distx.ps.serve()")
        self.opt_config = optimizer_config(optimizer, mode)
        total = sum(p.numel() for p in self.params)
        config = {"mode": mode, "staleness": staleness, "servers": servers, "total": total,
                  "chunk_elems": max(1, chunk_bytes // 4), "optimizer": self.opt_config,
                  "compression": compression}
        self._node, self._cfg = make_node(config, self.flatten(), timeout)
        self.workers = workers
        self._flat = torch.empty(total, dtype=torch.float32)
        self._pending = False
        self.write(self._cfg["init"])  # every rank starts from rank 0's parameters

    # -- flat views ---------------------------------------------------------
    def flatten(self, tensors: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        src = self.params if tensors is None else tensors
        parts = [(t.detach() if t is not None else torch.zeros_like(p)).reshape(-1)
                 for t, p in zip(src, self.params)]
        return torch.cat(parts).to(torch.float32) if parts else torch.empty(0)

    @torch.no_grad()
    def write(self, flat: torch.Tensor) -> None:
        off = 0
        for p in self.params:
            n = p.numel()
            p.copy_(flat[off:off + n].view_as(p))
            off += n

    # -- push / pull --------------------------------------------------------
    @property
    def clock(self) -> int:
        return self._node.clock()

    @property
    def pending(self) -> bool:
        return self._pending

    def push(self, update: torch.Tensor | Sequence[torch.Tensor], lr: float = 0.0) -> None:
        if self._pending:
            self.wait()
        flat = update if isinstance(update, torch.Tensor) else self.flatten(update)
        flat = flat.detach().to(torch.float32).contiguous()
        try:
            self._node.push_pull(flat, float(lr))
        except RuntimeError as e:
            raise to_backend_error(e) from None
        self._pending = True

    def pull(self) -> None:
        if self._pending:
            self.wait()
        self._node.pull()
        self._pending = True
        self.wait()

    def wait(self) -> None:
        if not self._pending:
            return
        self._pending = False
        try:
            self._node.wait(self._flat)
        except RuntimeError as e:
            raise to_backend_error(e) from None
        self.write(self._flat)

    def reply_log(self) -> list[tuple[int, int]]:
        """(clock pulled, minimum live clock at the shard) of every reply so far."""
        return list(self._node.reply_log())

    def stats(self) -> dict[str, Any]:
        """This rank's shard counters (applied pushes, rejected messages by reason)."""
        return dict(self._node.stats())

    def pushed_bytes(self) -> tuple[int, int]:
        """(payload bytes this worker pushed, after compression; the same pushes in fp32)."""
        return tuple(self._node.pushed_bytes())

    # -- checkpoint ---------------------------------------------------------
    def state_dict(self, group: Any = None) -> dict[str, Any]:
        """Parameters, server optimizer state and clocks of every chunk (from the shards).
        Collective over the workers (``group``: their process group): between two
        barriers no push is in flight, so the chunks and clocks form one consistent cut."""
        self.wait()
        dist.barrier(group=group)
        blobs = [bytes(b) for b in self._node.get_state()]
        dist.barrier(group=group)
        return _checkpoint.make_state(mode=self.mode, staleness=self.staleness, servers=self.servers,
                                      cfg=self._cfg, optimizer=self.opt_config, workers=self.workers,
                                      chunks=blobs)

    def load_state_dict(self, state: dict[str, Any], group: Any = None) -> None:
        """Restores every shard from ``state`` and continues from its clocks.
        Collective over the workers (``group``: their process group)."""
        _checkpoint.check_state(state, mode=self.mode, cfg=self._cfg, optimizer=self.opt_config,
                                workers=self.workers)
        self.wait()
        if dist.get_rank() == self.workers[0]:
            self._node.set_state(list(state["chunks"]))
        dist.barrier(group=group)
        # This worker's clock: its slot in the first chunk's clock table.
        n = min(self._cfg["chunk_elems"], self._cfg["total"])
        self._node.set_clock(_checkpoint.worker_clock(state["chunks"][0], n, self.opt_config,
                                                      self.workers.index(dist.get_rank())))
        self._node.pull()
        self._pending = True
        self.wait()

    def server_params(self) -> torch.Tensor:
        """The shards' current parameters (flat), read without a clock gate."""
        self.wait()
        out = [_checkpoint.chunk_params(b, len(self.workers), self.opt_config) for b in self._node.get_state()]
        return torch.cat(out) if out else torch.empty(0)

    def leave(self) -> None:
        """Done pushing: the shards drop this worker from their clocks, so nobody
        waits for it (workers may stop after different numbers of steps); it can
        still read :meth:`server_params` until :meth:`close`."""
        self.wait()
        self._node.leave()

    def close(self) -> None:
        """Done with the server; a rank that hosts a shard keeps serving until
        every worker has closed or died."""
        if self._node is None:
            return
        try:
            if self._pending:
                self.wait()
        finally:
            self._node.close()
            self._node = None


def connect(params: Iterable[torch.Tensor], **kwargs: Any) -> PsClient:
    """The direct push/pull API for non-DDP use: see :class:`PsClient`."""
    return PsClient(params, **kwargs)
