"""``torch_distx.compression_stats``: what a group's compression switch did."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d as c10d

__all__ = ["compression_stats"]


def compression_stats(group: dist.ProcessGroup | None = None) -> dict[str, Any]:
    """Counters of a distx group's compressed all-reduces, on this rank.

    Keys: ``method``, ``config`` (what is in force), ``source``, ``calls``
    (compressed all-reduces, fallbacks included), ``exact_calls`` (all-reduces the
    gate left exact), ``input_bytes``, ``bytes_before`` (what a dense ring would
    have sent for them), ``bytes_after`` (what was sent), ``ratio``
    (before / after), ``fallbacks`` (``density``, ``non_finite``) and
    ``codec_seconds`` (time in encode and decode).
    """
    from . import _C

    pg = group or c10d._get_default_group()
    if c10d.get_backend(pg) != "distx":
        raise ValueError(f"compression_stats: the group runs on {c10d.get_backend(pg)!r}, not distx")
    stats = _C._compression_stats(pg._get_backend(torch.device("cpu")))
    after = stats["bytes_after"]
    stats["ratio"] = stats["bytes_before"] / after if after else 1.0
    return stats
