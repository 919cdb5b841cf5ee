"""Dispatcher: ``python -m torch_distx.bench <name> [options]``."""

from __future__ import annotations

import importlib
import sys

_BENCHMARKS = {
    "allreduce": "torch_distx.bench.allreduce",
    "compression": "torch_distx.bench.compression",
    "gpu": "torch_distx.bench.gpu",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in _BENCHMARKS:
        print(f"usage: python -m torch_distx.bench {{{','.join(_BENCHMARKS)}}} [options]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(_BENCHMARKS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
