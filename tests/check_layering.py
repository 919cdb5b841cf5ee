#!/usr/bin/env python3
"""Checks the include layering of csrc/ (docs/design.md, "Layers"): no folder
includes a folder above it, and third-party headers stay where they belong.
Run by `make test` (check-layering); exits 1 naming every offending line.

    python3 tests/check_layering.py [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import sys

# What each folder of csrc/ may include from csrc/ (by top folder; a folder may
# always include itself). Bottom to top.
ALLOWED = {
    "common": set(),
    "transport": {"common"},
    "compression": {"common"},
    "ps": {"common", "compression", "transport"},
    "algorithms": {"common", "compression", "transport"},
    "backend": {"common", "compression", "transport", "algorithms", "ps"},
    "python": {"common", "compression", "transport", "algorithms", "ps", "backend"},
}

# Third-party headers: (pattern of the include, folders or files that may use it).
THIRD_PARTY = [
    (re.compile(r"^(torch|ATen|c10|pybind11)/"), ("backend/", "python/")),
    (re.compile(r"^(ucp|ucs|uct)/"), ("transport/ucx/",)),
    (re.compile(r"^(nccl\.h|cuda|cuda_runtime|cuda_fp16|cuda_bf16|cub/)"),
     ("transport/nccl/", ".cu", ".cuh")),
]

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def problems(root: str) -> list[str]:
    csrc = os.path.join(root, "csrc")
    found = []
    for dirpath, _, files in os.walk(csrc):
        for name in sorted(files):
            if not name.endswith((".h", ".hpp", ".cpp", ".cu", ".cuh")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, csrc)
            folder = rel.split(os.sep)[0]
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    quote, header = m.groups()
                    close = ">" if quote == "<" else quote
                    where = f"csrc/{rel}:{lineno}: #include {quote}{header}{close}"
                    top = header.split("/")[0]
                    if quote == '"' and top in ALLOWED:
                        if top != folder and top not in ALLOWED.get(folder, set()):
                            found.append(f"{where}: {folder}/ may not include {top}/ (upward)")
                        continue
                    for pattern, owners in THIRD_PARTY:
                        if pattern.match(header) and not any(
                                rel.startswith(o) or rel.endswith(o) for o in owners):
                            found.append(f"{where}: only {', '.join(owners)} may include this")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args(argv)
    found = problems(args.root)
    for p in found:
        print(p)
    print(f"check-layering: {'FAILED, ' + str(len(found)) + ' forbidden includes' if found else 'ok'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
