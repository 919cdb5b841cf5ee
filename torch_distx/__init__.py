"""torch-distx: a PyTorch distributed backend over UCX.

Importing this package registers the backend name ``"distx"`` for CPU and CUDA
devices, so ``torch.distributed.init_process_group(backend="distx")`` works.
"""

from __future__ import annotations

import atexit
import os

# UCX 1.13 installs SIGSEGV/SIGBUS handlers by default, which hide Python's own
# faulthandler output; leave the user's setting alone if they chose one.
os.environ.setdefault("UCX_HANDLE_ERRORS", "none")

import torch  # noqa: E402  (torch must be imported before the extension)
import torch.distributed  # noqa: E402,F401

from . import _build_info  # noqa: E402

if _build_info.UCX_FROM_WHEEL:  # built against the PyPI libucx wheel: load its libraries first
    import libucx

    libucx.load_library()

from . import _C  # noqa: E402


def _nccl_library() -> str:
    """libnccl.so.2 of the nvidia-nccl-cu13 wheel next to torch ("" if absent:
    then the copy torch loaded is found by its SONAME). Note [Loading NCCL]."""
    try:
        import nvidia.nccl  # namespace package: __path__, no __file__
    except ImportError:
        return ""
    for root in nvidia.nccl.__path__:
        path = os.path.join(root, "lib", "libnccl.so.2")
        if os.path.exists(path):
            return path
    return ""


if _C.with_cuda:
    _C._set_nccl_library(_nccl_library())
from ._register import register  # noqa: E402
from .compression import compression_stats  # noqa: E402
from .monitored import monitored_barrier  # noqa: E402
from ._topology import local_host, topology  # noqa: E402
from .options import Options  # noqa: E402

# Public submodules that are imported on first attribute access (PEP 562), so
# `import torch_distx; torch_distx.ps.attach(...)` works while a bare import
# stays cheap (the parameter server, hooks and benchmarks are not loaded).
_LAZY_SUBMODULES = ("bench", "hooks", "info", "ops", "ps")

__all__ = ["Options", "compression_stats", "local_host", "monitored_barrier", "register", "topology",
           "ucx_version", "__version__", *_LAZY_SUBMODULES]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # also sets the attribute: once only
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


def ucx_version() -> str:
    """The UCX version this process loaded."""
    return _C.ucx_version()


register()
# Note [Shutdown at exit] (csrc/backend/process_group_distx.cpp): groups the
# script never destroyed stop their threads before the interpreter finalizes.
atexit.register(_C._shutdown_live_groups)
