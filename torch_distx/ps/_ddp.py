"""DDP integration: attach() turns a DDP model's training into pushes and
pulls through a :class:`PsClient`; detach() returns it to synchronous DDP."""

from __future__ import annotations

import datetime
import types
from typing import Any

import torch
import torch.distributed as dist

from ._client import PsClient
from ._config import DEFAULT_CHUNK_BYTES


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
           chunk_bytes: int = DEFAULT_CHUNK_BYTES,
           timeout: datetime.timedelta | float | None = None) -> ParameterServer:
    """Turns a DDP model into parameter-server training (see :mod:`torch_distx.ps`).
    Collective over the default group: with ``servers`` > 0 the server ranks
    call :func:`serve` at the same time."""
    return ParameterServer(model, optimizer, mode=mode, staleness=staleness, servers=servers,
                           compression=compression, chunk_bytes=chunk_bytes, timeout=timeout)
