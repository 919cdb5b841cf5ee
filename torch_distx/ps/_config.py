"""Parameter-server options: rank roles, the compression spec and the
optimizer configuration the shards run, checked before any collective."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .. import _C

MODES = ("delta", "server")
OPT_KINDS = {"add": 0, "sgd": 1, "adam": 2, "adamw": 3}
DEFAULT_CHUNK_BYTES = 1 << 20


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
    ``"topk:0.01"``) -> (codec id, top-k ratio), by the one parser of the group
    switch and the ops (Note [Codec vocabulary]); ``ValueError`` otherwise."""
    if spec is None:
        return 0, 0.01
    if not isinstance(spec, str):
        raise ValueError(f"ps: compression must be None, 'fp16', 'bf16' or 'topk:<ratio>', got {spec!r}")
    method, ratio = _C.parse_compression(spec, "ps: compression")
    return method, ratio if ratio > 0 else 0.01


def optimizer_config(optimizer: torch.optim.Optimizer | None, mode: str) -> dict[str, Any]:
    """The update rule the shards apply: ``"add"`` in mode "delta", else the
    optimizer's (SGD, Adam or AdamW, one set of hyperparameters)."""
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


def slots(opt: dict[str, Any]) -> int:
    """Optimizer state tensors per parameter on a shard (momentum: 1, Adam: 2)."""
    if opt["kind"] == "sgd":
        return 1 if opt["momentum"] != 0 else 0
    return 2 if opt["kind"] in ("adam", "adamw") else 0
