"""A dedicated server rank: hosts its shard until every worker is gone."""

from __future__ import annotations

import datetime
from typing import Any

import torch.distributed as dist

from ._config import roles
from ._node import make_node


def serve(servers: int, timeout: datetime.timedelta | float | None = None) -> dict[str, Any]:
    """Runs a dedicated server rank until every worker has left or died; returns
    the shard's counters. Collective with the workers' attach()/connect()."""
    _, server_ranks = roles(servers)
    if servers <= 0 or dist.get_rank() not in server_ranks:
        raise ValueError(f"ps: rank {dist.get_rank()} is not one of the server ranks {server_ranks}")
    node, _ = make_node(None, None, timeout)
    try:
        node.wait_server_idle()
        return dict(node.stats())
    finally:
        node.close()
