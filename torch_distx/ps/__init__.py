"""Parameter-server mode: asynchronous and bounded-staleness training.

With DDP unchanged apart from one call::

    dist.init_process_group("distx")
    model = DDP(model, broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ps = torch_distx.ps.attach(model, opt, mode="delta", staleness=2)
    for x, y in loader:
        loss = ...; loss.backward(); opt.step(); opt.zero_grad()
    ps.detach()          # back to synchronous DDP, every rank with the server's parameters

Modes: ``"delta"`` (the local optimizer steps; the worker pushes its parameter
delta and the shard adds it) and ``"server"`` (the worker pushes gradients; the
shard runs SGD/Adam/AdamW in C++ with the lr of each push). ``staleness=s``: a
pull for clock c returns once the slowest live worker reached c - s (0 is
synchronous SGD on the summed update, -1 fully asynchronous). Shards are
colocated in the ranks (``servers=0``) or the last K ranks of the world run
only :func:`serve`. See docs/ps.md.
"""

from __future__ import annotations

import datetime
import itertools
import struct
import types
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist

from .. import _C

__all__ = ["ParameterServer", "PsClient", "attach", "connect", "serve", "worker_group", "roles",
           "parse_compression"]

_MODES = ("delta", "server")
_OPT_KINDS = {"add": 0, "sgd": 1, "adam": 2, "adamw": 3}
_CODECS = {"fp16": 1, "bf16": 2, "topk": 3}  # csrc/ps/wire.h, Codec
_DEFAULT_CHUNK_BYTES = 1 << 20
_incarnation = itertools.count()


def roles(servers: int = 0, world_size: int | None = None) -> tuple[list[int], list[int]]:
    """(worker ranks, server ranks) of the default group for ``servers`` dedicated
    server ranks (the last ``servers`` ranks; 0 = every rank is both)."""
    size = dist.get_world_size() if world_size is None else world_size
    if not 0 <= servers < size:
        raise ValueError(f"ps: servers must be in [0, {size - 1}] for a world of {size}, got {servers}")
    if servers == 0:
        return list(range(size)), list(range(size))
    return list(range(size - servers)), list(range(size - servers, size))


def worker_group(servers: int) -> Any:
    """The process group of the worker ranks (build DDP on it when ``servers`` > 0).
    Collective: every rank of the default group calls it; server ranks get
    ``GroupMember.NON_GROUP_MEMBER``."""
    workers, _ = roles(servers)
    return dist.new_group(workers)


def parse_compression(spec: str | None) -> tuple[int, float]:
    """``None``, ``"fp16"``, ``"bf16"`` or ``"topk:<ratio>"`` (ratio in (0, 1], e.g.
    ``"topk:0.01"``) -> (codec id, top-k ratio)."""
    if spec is None:
        return 0, 0.01
    if not isinstance(spec, str):
        raise ValueError(f"ps: compression must be None, 'fp16', 'bf16' or 'topk:<ratio>', got {spec!r}")
    name, _, arg = spec.partition(":")
    if name in ("fp16", "bf16") and not arg:
        return _CODECS[name], 0.01
    if name == "topk" and arg:
        try:
            ratio = float(arg)
        except ValueError:
            ratio = float("nan")
        if 0.0 < ratio <= 1.0:
            return _CODECS["topk"], ratio
        raise ValueError(f"ps: top-k ratio must be in (0, 1], got {arg!r} in compression={spec!r}")
    raise ValueError(f"ps: compression must be None, 'fp16', 'bf16' or 'topk:<ratio>' "
                     f"(e.g. 'topk:0.01'), got {spec!r}")


def _optimizer_config(optimizer: torch.optim.Optimizer | None, mode: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"kind": "add", "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                           "nesterov": False, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    if mode == "delta":
        return cfg
    if optimizer is None:
        raise ValueError("ps: mode='server' needs the optimizer whose update the shards run")
    groups = optimizer.param_groups
    g0 = {k: v for k, v in groups[0].items() if k != "params"}
    for g in groups[1:]:
        if {k: v for k, v in g.items() if k != "params"} != g0:
            raise ValueError("ps: mode='server' needs one set of hyperparameters for all param groups")
    if type(optimizer) is torch.optim.SGD:
        if g0.get("maximize"):
            raise ValueError("ps: mode='server' does not support SGD(maximize=True)")
        cfg.update(kind="sgd", momentum=float(g0["momentum"]), dampening=float(g0["dampening"]),
                   weight_decay=float(g0["weight_decay"]), nesterov=bool(g0["nesterov"]))
    elif type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        if g0.get("amsgrad") or g0.get("maximize"):
            raise ValueError("ps: mode='server' does not support amsgrad or maximize")
        adamw = type(optimizer) is torch.optim.AdamW or bool(g0.get("decoupled_weight_decay"))
        cfg.update(kind="adamw" if adamw else "adam", weight_decay=float(g0["weight_decay"]),
                   beta1=float(g0["betas"][0]), beta2=float(g0["betas"][1]), eps=float(g0["eps"]))
    else:
        raise ValueError(f"ps: mode='server' runs SGD, Adam or AdamW on the shards, not "
                         f"{type(optimizer).__name__}; use mode='delta' for any optimizer")
    return cfg


def _slots(opt: dict[str, Any]) -> int:
    if opt["kind"] == "sgd":
        return 1 if opt["momentum"] != 0 else 0
    return 2 if opt["kind"] in ("adam", "adamw") else 0


def _to_backend_error(e: BaseException) -> BaseException:
    err = dist.DistBackendError(str(e))
    err.__cause__ = e
    return err


def _make_node(config: dict[str, Any] | None, init: torch.Tensor | None,
               timeout: datetime.timedelta | float | None) -> tuple[Any, dict[str, Any]]:
    """Collective over the default group: rank 0 (a worker) publishes the
    configuration and the initial parameters, every rank builds its node."""
    rank, size = dist.get_rank(), dist.get_world_size()
    box = [config if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    cfg = box[0]
    if cfg is None:
        raise RuntimeError("ps: rank 0 must be a worker (it publishes the model)")
    if config is not None:
        for key in ("mode", "staleness", "servers", "total", "compression"):
            if config[key] != cfg[key]:
                raise ValueError(f"ps: rank {rank} has {key}={config[key]!r}, rank 0 {cfg[key]!r}")
    flat = init if (rank == 0 and init is not None) else torch.empty(cfg["total"], dtype=torch.float32)
    dist.broadcast(flat, src=0)
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    elif timeout is None:
        seconds = 1800.0
    else:
        seconds = float(timeout)
    workers, servers = roles(cfg["servers"], size)
    store = dist.PrefixStore(f"distx_ps/{next(_incarnation)}/",
                             dist.distributed_c10d._get_default_store())
    o = cfg["optimizer"]
    node = _C._PsNode(store, rank, size, workers, servers, int(cfg["staleness"]), _OPT_KINDS[o["kind"]],
                      o["momentum"], o["dampening"], o["weight_decay"], o["nesterov"], o["beta1"],
                      o["beta2"], o["eps"], int(cfg["chunk_elems"]), seconds, flat,
                      *parse_compression(cfg.get("compression")))
    return node, dict(cfg, init=flat)


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
                 compression: str | None = None, chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
                 timeout: datetime.timedelta | float | None = None) -> None:
        if mode not in _MODES:
            raise ValueError(f"ps: mode must be one of {_MODES}, got {mode!r}")
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
        self.opt_config = _optimizer_config(optimizer, mode)
        total = sum(p.numel() for p in self.params)
        config = {"mode": mode, "staleness": staleness, "servers": servers, "total": total,
                  "chunk_elems": max(1, chunk_bytes // 4), "optimizer": self.opt_config,
                  "compression": compression}
        self._node, self._cfg = _make_node(config, self.flatten(), timeout)
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
            raise _to_backend_error(e) from None
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
            raise _to_backend_error(e) from None
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
        return {"format": 1, "mode": self.mode, "staleness": self.staleness, "servers": self.servers,
                "total": self._cfg["total"], "chunk_elems": self._cfg["chunk_elems"],
                "optimizer": dict(self.opt_config), "workers": list(self.workers), "chunks": blobs}

    def load_state_dict(self, state: dict[str, Any], group: Any = None) -> None:
        """Restores every shard from ``state`` and continues from its clocks.
        Collective over the workers (``group``: their process group)."""
        for key in ("total", "chunk_elems", "workers", "mode"):
            if state.get(key) != (self.workers if key == "workers" else
                                  self.mode if key == "mode" else self._cfg[key]):
                raise ValueError(f"ps: checkpoint {key}={state.get(key)!r} does not match this job")
        if state["optimizer"] != self.opt_config:
            raise ValueError("ps: checkpoint optimizer configuration differs from this job's")
        self.wait()
        if dist.get_rank() == self.workers[0]:
            self._node.set_state(list(state["chunks"]))
        dist.barrier(group=group)
        # This worker's clock: its slot in the first chunk's clock table.
        chunk0 = state["chunks"][0]
        n = min(self._cfg["chunk_elems"], self._cfg["total"])
        off = 4 * n * (1 + _slots(self.opt_config)) + 8 + 8 * self.workers.index(dist.get_rank())
        self._node.set_clock(struct.unpack_from("<q", chunk0, off)[0])
        self._node.pull()
        self._pending = True
        self.wait()

    def server_params(self) -> torch.Tensor:
        """The shards' current parameters (flat), read without a clock gate."""
        self.wait()
        out = []
        for b in self._node.get_state():
            n = (len(b) - 8 * (1 + len(self.workers))) // (4 * (1 + _slots(self.opt_config)))
            out.append(torch.frombuffer(bytearray(b[:4 * n]), dtype=torch.float32))
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


class ParameterServer:
    """What :func:`attach` returns: the DDP model trains through the parameter
    server until :meth:`detach`."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, mode: str,
                 staleness: int, servers: int, compression: str | None, chunk_bytes: int,
                 timeout: datetime.timedelta | float | None) -> None:
        _check_ddp(model)
        self.model = model
        self.optimizer = optimizer
        params = [p for p in model.parameters() if p.requires_grad]
        self.client = PsClient(params, mode=mode, staleness=staleness, servers=servers,
                               optimizer=optimizer, compression=compression,
                               chunk_bytes=chunk_bytes, timeout=timeout)
        self._before: torch.Tensor | None = None
        self._saved_step: Any = None
        self._handles: list[Any] = []
        # Note [PS keeps gradients local]: DDP's own switch (what no_sync() sets):
        # no all-reduce in backward and no bucket rebuild broadcast, so no step
        # synchronises the workers; restored by detach().
        self._old_sync = model.require_backward_grad_sync
        model.require_backward_grad_sync = False
        self._handles.append(model.register_forward_pre_hook(self._pre_forward))
        if mode == "delta":
            self._handles.append(optimizer.register_step_pre_hook(self._pre_step))
            self._handles.append(optimizer.register_step_post_hook(self._post_step))
        else:
            # An LR scheduler may have wrapped step as an instance attribute: keep it to restore.
            self._saved_step = optimizer.__dict__.get("step")
            # Bound to the optimizer, not to self: an LR scheduler created after
            # attach() wraps opt.step by rebinding step.__func__ to the optimizer.
            server = self

            def _step(opt: torch.optim.Optimizer, closure: Any = None) -> Any:
                return server._server_step(closure)

            optimizer.step = types.MethodType(_step, optimizer)  # type: ignore[method-assign]
        self._attached = True

    @property
    def clock(self) -> int:
        return self.client.clock

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _pre_forward(self, module: torch.nn.Module, args: Any) -> None:
        if getattr(module, "_join_config", None) is not None and module._join_config.enable:
            raise RuntimeError("ps: DDP join() synchronises every step; it cannot run in "
                               "parameter-server mode (detach() first)")
        self.client.wait()

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.client.wait()
        self._before = self.client.flatten()

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        delta = self.client.flatten() - self._before
        self._before = None
        self.client.push(delta, 0.0)

    def _server_step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.client.wait()
        grads = self.client.flatten([p.grad for p in self.client.params])
        self.client.push(grads, self._lr())
        return loss

    def sync(self) -> None:
        """Waits for the pull in flight and writes the parameters (the next forward does it too)."""
        self.client.wait()

    def state_dict(self) -> dict[str, Any]:
        """Collective over the workers; see :meth:`PsClient.state_dict`."""
        return self.client.state_dict(group=self.model.process_group)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.client.load_state_dict(state, group=self.model.process_group)

    def stats(self) -> dict[str, Any]:
        return self.client.stats()

    def reply_log(self) -> list[tuple[int, int]]:
        return self.client.reply_log()

    def _unhook(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self.client.mode == "server":
            if self._saved_step is not None:
                self.optimizer.step = self._saved_step  # type: ignore[method-assign]
            elif "step" in self.optimizer.__dict__:
                del self.optimizer.step
        self.model.require_backward_grad_sync = self._old_sync
        self._attached = False

    def detach(self) -> None:
        """Back to synchronous DDP. Collective over the workers: once every
        worker's last push is applied, each reads the shards' parameters, so all
        ranks end bit-identical; then the parameter server shuts down. Workers may
        have taken different numbers of steps: each leaves the clocks first, so
        nobody waits for a worker that has stopped."""
        if not self._attached:
            return
        self.client.leave()
        group = self.model.process_group
        dist.barrier(group=group)
        self.client.write(self.client.server_params())
        dist.barrier(group=group)
        self.client.close()
        self._unhook()

    def close(self) -> None:
        """Leaves without the collective part of detach() (e.g. after a peer died)."""
        if not self._attached:
            return
        try:
            self.client.close()
        finally:
            self._unhook()


def _check_ddp(model: torch.nn.Module) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not isinstance(model, DDP):
        raise TypeError(f"ps.attach expects a DistributedDataParallel model, got {type(model).__name__}; "
                        "use torch_distx.ps.connect(params) for the direct push/pull API")
    if getattr(model, "forward_sync_buffers", getattr(model, "broadcast_buffers", False)) and \
            any(True for _ in model.module.buffers()):
        raise ValueError("ps: DDP(broadcast_buffers=True) broadcasts buffers before every forward, "
                         "which synchronises the workers; build DDP with broadcast_buffers=False "
                         "(forward_sync_buffers=False) for parameter-server mode")
    if model.find_unused_parameters:
        raise ValueError("ps: DDP(find_unused_parameters=True) all-reduces a used-parameter map every "
                         "step, which synchronises the workers; build DDP without it")
    if getattr(model, "_join_config", None) is not None and model._join_config.enable:
        raise ValueError("ps: DDP join() synchronises every step; call attach() outside Join")


def attach(model: torch.nn.Module, optimizer: torch.optim.Optimizer, mode: str = "delta",
           staleness: int = 0, servers: int = 0, compression: str | None = None, *,
           chunk_bytes: int = _DEFAULT_CHUNK_BYTES,
           timeout: datetime.timedelta | float | None = None) -> ParameterServer:
    """Turns a DDP model into parameter-server training (see the module docstring).
    Collective over the default group: with ``servers`` > 0 the server ranks
    call :func:`serve` at the same time."""
    return ParameterServer(model, optimizer, mode=mode, staleness=staleness, servers=servers,
                           compression=compression, chunk_bytes=chunk_bytes, timeout=timeout)


def serve(servers: int, timeout: datetime.timedelta | float | None = None) -> dict[str, Any]:
    """Runs a dedicated server rank until every worker has left or died; returns
    the shard's counters. Collective with the workers' attach()/connect()."""
    _, server_ranks = roles(servers)
    if servers <= 0 or dist.get_rank() not in server_ranks:
        raise ValueError(f"ps: rank {dist.get_rank()} is not one of the server ranks {server_ranks}")
    node, _ = _make_node(None, None, timeout)
    try:
        node.wait_server_idle()
        return dict(node.stats())
    finally:
        node.close()
