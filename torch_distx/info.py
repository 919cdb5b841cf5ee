"""``python -m torch_distx.info``: what this installation was built with and
loads at run time, and every distx setting (Note [Settings table]): its
``DISTX_*`` variable with the current value, the ``torch_distx.Options`` field
that sets it for one group (``-`` for process-wide ones), and its default."""

from __future__ import annotations

import os
import sys

import torch

import torch_distx
from torch_distx import _build_info, _C

__all__ = ["main"]


def main() -> int:
    print(f"torch-distx {torch_distx.__version__}")
    print(f"  torch           {torch.__version__} (built against {_build_info.TORCH_VERSION})")
    print(f"  UCX             {torch_distx.ucx_version()} (build: {_build_info.UCX_SOURCE})")
    cuda_mem = "yes" if _C.ucx_cuda_memory() else "no: CUDA tensors cross hosts via pinned host memory"
    print(f"  UCX CUDA memory {cuda_mem}")
    print(f"  CUDA sources    {'compiled' if _build_info.WITH_CUDA else 'not compiled (CPU torch)'}")
    print(f"  python          {sys.version.split()[0]}")
    host = torch_distx.local_host()
    source = "DISTX_HOSTID" if host["from_env"] else "hostname + boot_id"
    print(f"  host            {host['hostname']} (host id {host['host_id']} from {source})")
    print("settings (pg_options field beats the variable; '-': process-wide, environment only):")
    for option, name, kind, default, help_text in _C.settings():
        value = os.environ.get(name)
        shown = value if value is not None else f"(default {default or 'unset'})"
        print(f"  {name:25s} {option or '-':19s} {shown:22s} [{kind}] {help_text}")
    for name in ("UCX_TLS", "UCX_NET_DEVICES", "UCX_HANDLE_ERRORS", "UCX_LOG_LEVEL"):
        if name in os.environ:
            print(f"  {name:18s} {os.environ[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
