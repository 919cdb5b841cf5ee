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

if os.environ.get("DISTX_AS_GLOO") == "1":
    # Alias mode for the tests the suite gates by name to gloo (BACKEND=gloo
    # passes the gates): every process group asked for as "gloo" is created
    # as distx, and get_backend() answers "gloo" for it so the tests' own
    # backend comparisons hold. _check_alias() proves each group really is
    # distx.
    import torch.distributed as dist

    import torch_distx

    _real_init, _real_new_group, _real_get_backend = dist.init_process_group, dist.new_group, dist.get_backend

    def _distx(backend):
        return "distx" if backend is None or str(backend).lower() == "gloo" else backend

    def _check_alias(group=None):
        real = (group or dist.group.WORLD)._get_backend(torch.device("cpu")).name()
        if real != "distx":
            raise AssertionError(f"alias mode: a group runs on {real}, not distx")

    def init_process_group(backend=None, *args, **kwargs):
        _real_init(_distx(backend), *args, **kwargs)
        _check_alias()

    def new_group(ranks=None, timeout=None, backend=None, *args, **kwargs):
        group = _real_new_group(ranks, timeout, _distx(backend), *args, **kwargs)
        if group not in (None, dist.GroupMember.NON_GROUP_MEMBER):
            _check_alias(group)
        return group

    def get_backend(group=None):
        real = _real_get_backend(group)
        return "gloo" if real == "distx" else real

    dist.init_process_group, dist.new_group, dist.get_backend = init_process_group, new_group, get_backend
    dist.monitored_barrier = torch_distx.monitored_barrier  # torch's refuses every backend but gloo

from torch.testing._internal.distributed.distributed_test import (  # noqa: E402
    DistributedTest,
    TestDistBackend,
)


from torch.testing._internal.distributed import distributed_test  # noqa: E402

if BACKEND == "distx":
    # distx Works carry profiler events named "distx:<op>", as gloo's do "gloo:<op>".
    distributed_test.PROFILING_SUPPORTED_BACKENDS.append("distx")
    distributed_test.SEND_RECV_PROFILING_SUPPORTED_BACKENDS.append("distx")
elif os.environ.get("DISTX_AS_GLOO") == "1":
    _real_get_profiling_event = distributed_test.get_profiling_event

    def _get_profiling_event(event_name, *args, **kwargs):  # the events are distx's
        if event_name.startswith("gloo:"):
            event_name = "distx:" + event_name[len("gloo:"):]
        return _real_get_profiling_event(event_name, *args, **kwargs)

    distributed_test.get_profiling_event = _get_profiling_event


class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        self._spawn_processes()


if __name__ == "__main__":
    if BACKEND not in ("gloo", "distx"):
        sys.exit(f"BACKEND must be gloo or distx, got {BACKEND}")
    run_tests()
