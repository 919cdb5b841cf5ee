"""The C++ parameter-server node (``_C._PsNode``) and how every rank builds
it: one collective over the default group."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import torch
import torch.distributed as dist

from .. import _C
from ._config import OPT_KINDS, parse_compression, roles

_incarnation = itertools.count()


def to_backend_error(e: BaseException) -> BaseException:
    """A node's RuntimeError as the DistBackendError users catch."""
    err = dist.DistBackendError(str(e))
    err.__cause__ = e
    return err


def _seconds(timeout: datetime.timedelta | float | None) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    if timeout is None:
        return 1800.0
    return float(timeout)


def make_node(config: dict[str, Any] | None, init: torch.Tensor | None,
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
    seconds = _seconds(timeout)
    workers, servers = roles(cfg["servers"], size)
    store = dist.PrefixStore(f"distx_ps/{next(_incarnation)}/",
                             dist.distributed_c10d._get_default_store())
    o = cfg["optimizer"]
    node = _C._PsNode(store, rank, size, workers, servers, int(cfg["staleness"]), OPT_KINDS[o["kind"]],
                      o["momentum"], o["dampening"], o["weight_decay"], o["nesterov"], o["beta1"],
                      o["beta2"], o["eps"], int(cfg["chunk_elems"]), seconds, flat,
                      *parse_compression(cfg.get("compression")))
    return node, dict(cfg, init=flat)
