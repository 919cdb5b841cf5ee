"""tests/check_layering.py (run by `make test`) passes on the tree and catches
an upward include and a third-party header in the wrong folder."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "tests", "check_layering.py")


def _run(root: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, CHECK, "--root", root], capture_output=True, text=True,
                          timeout=60)


def test_tree_is_layered() -> None:
    proc = _run(ROOT)
    assert proc.returncode == 0, proc.stdout


def test_forbidden_includes_are_named(tmp_path) -> None:
    files = {
        "csrc/common/ok.h": '#include "common/other.h"\n#include <vector>\n',
        "csrc/common/up.cpp": '#include "transport/transport.h"\n',
        "csrc/algorithms/torchy.cpp": "#include <ATen/ATen.h>\n",
        "csrc/backend/ucxy.cpp": "#include <ucp/api/ucp.h>\n",
        "csrc/compression/k.cu": "#include <cuda_runtime.h>\n",
        "csrc/backend/fine.cpp": '#include "algorithms/algorithm.h"\n#include <torch/torch.h>\n',
    }
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = _run(str(tmp_path))
    assert proc.returncode == 1
    bad = sorted(line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("csrc/"))
    assert bad == ["csrc/algorithms/torchy.cpp", "csrc/backend/ucxy.cpp", "csrc/common/up.cpp"], proc.stdout
