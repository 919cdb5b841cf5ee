"""What a parameter-server checkpoint holds, and the layout of a chunk's state.

A chunk's blob (``_PsNode.get_state()``, csrc/ps) is, for ``n`` elements:
``n`` float32 parameters, ``slots`` x ``n`` float32 optimizer state, 8 bytes,
then one little-endian int64 clock per worker, in worker order.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

import torch

from ._config import slots

FORMAT = 1


def make_state(*, mode: str, staleness: int, servers: int, cfg: dict[str, Any],
               optimizer: dict[str, Any], workers: Sequence[int], chunks: list[bytes]) -> dict[str, Any]:
    """The state dict of a job (``cfg``: the published configuration) and its chunks' blobs."""
    return {"format": FORMAT, "mode": mode, "staleness": staleness, "servers": servers,
            "total": cfg["total"], "chunk_elems": cfg["chunk_elems"],
            "optimizer": dict(optimizer), "workers": list(workers), "chunks": chunks}


def check_state(state: dict[str, Any], *, mode: str, cfg: dict[str, Any], optimizer: dict[str, Any],
                workers: Sequence[int]) -> None:
    """Refuses a checkpoint of another job's layout, workers or optimizer."""
    for key in ("total", "chunk_elems", "workers", "mode"):
        if state.get(key) != (workers if key == "workers" else mode if key == "mode" else cfg[key]):
            raise ValueError(f"ps: checkpoint {key}={state.get(key)!r} does not match this job")
    if state["optimizer"] != optimizer:
        raise ValueError("ps: checkpoint optimizer configuration differs from this job's")


def worker_clock(chunk: bytes, elems: int, optimizer: dict[str, Any], index: int) -> int:
    """The clock of worker ``index`` (its position among the workers) in a chunk of ``elems`` elements."""
    off = 4 * elems * (1 + slots(optimizer)) + 8 + 8 * index
    return struct.unpack_from("<q", chunk, off)[0]


def chunk_params(chunk: bytes, num_workers: int, optimizer: dict[str, Any]) -> torch.Tensor:
    """A chunk's parameters (a float32 copy)."""
    n = (len(chunk) - 8 * (1 + num_workers)) // (4 * (1 + slots(optimizer)))
    return torch.frombuffer(bytearray(chunk[:4 * n]), dtype=torch.float32)
