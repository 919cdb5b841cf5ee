"""Registration of the "distx" backend with torch.distributed.

``register()`` is what ``import torch_distx`` runs, and what torch >= 2.14
calls through the ``torch.distributed.backends`` entry point.
"""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["register"]

_NAME = "distx"


def _create_backend(dist_opts, backend_opts=None):
    """Creator torch calls once per process group (extended API)."""
    from . import _C

    from .options import Options

    if backend_opts is not None and not isinstance(backend_opts, Options):
        raise TypeError(f"distx: pg_options must be a torch_distx.Options, got {type(backend_opts).__name__}")
    return _C._create_backend(
        dist_opts.store,
        dist_opts.group_rank,
        dist_opts.group_size,
        dist_opts.timeout.total_seconds(),
        dist_opts.group_id,
        backend_opts._as_strings() if backend_opts is not None else {},
    )


def register() -> None:
    """Registers backend "distx" for cpu and cuda; safe to call more than once."""
    plugins = getattr(dist.Backend, "_plugins", {})
    if _NAME.upper() in plugins:
        return
    dist.Backend.register_backend(_NAME, _create_backend, extended_api=True, devices=["cpu", "cuda"])
