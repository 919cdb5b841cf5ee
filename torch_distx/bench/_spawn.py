"""Runs a benchmark body in N local processes and returns rank 0's result."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, nproc: int, port: int, fn: Callable, args: tuple, out_dir: str) -> None:
    import pickle

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank))
    result = fn(rank, nproc, *args)
    if rank == 0:
        with open(os.path.join(out_dir, "result.pkl"), "wb") as f:
            pickle.dump(result, f)


def run(nproc: int, fn: Callable, *args: Any) -> Any:
    import pickle

    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_entry, args=(nproc, free_port(), fn, args, d), nprocs=nproc,
                           join=True, start_method="spawn")
        with open(os.path.join(d, "result.pkl"), "rb") as f:
            return pickle.load(f)
