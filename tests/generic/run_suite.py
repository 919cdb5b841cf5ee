"""Runs PyTorch's own generic distributed test-suite (shipped in the torch wheel as
torch.testing._internal.distributed.distributed_test) against a backend.

    BACKEND=distx WORLD_SIZE=2 python tests/generic/run_suite.py [-k PATTERN] [-v]
    BACKEND=gloo  WORLD_SIZE=2 python tests/generic/run_suite.py [-k PATTERN]

This replaces torch's test/distributed/test_distributed_spawn.py (source tree
only), which accepts only gloo and nccl. For distx the suite's feature sets are
extended with the features distx really has, before distributed_test is
imported (its decorators read them at import time). `make test-generic` runs it
for both backends and prints pass/skip/fail counts side by side.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("WORLD_SIZE", "2")
os.environ.setdefault("TEMP_DIR", tempfile.mkdtemp(prefix="distx-generic-"))
BACKEND = os.environ.setdefault("BACKEND", "distx")

import torch  # noqa: E402,F401
from torch.testing._internal.common_distributed import DistTestCases  # noqa: E402
from torch.testing._internal.common_utils import run_tests  # noqa: E402

if BACKEND == "distx":
    import torch_distx  # noqa: F401  (registers "distx"; spawned children re-import this file)

    DistTestCases.backend_feature["plugin"].add("distx")
    DistTestCases.backend_feature["ddp"].add("distx")
    DistTestCases.backend_feature["subgroup"].add("distx")
    # CPU only so far: no "gpu"/"cuda" feature.

from torch.testing._internal.distributed.distributed_test import (  # noqa: E402
    DistributedTest,
    TestDistBackend,
)


class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        self._spawn_processes()


if __name__ == "__main__":
    if BACKEND not in ("gloo", "distx"):
        sys.exit(f"BACKEND must be gloo or distx, got {BACKEND}")
    run_tests()
