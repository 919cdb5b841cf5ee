"""The UCX data path stays on shared memory with dead-peer detection on: UCX's
own peer-failure mode would have moved it to TCP (UCX 1.13), so distx detects
failures with its liveness ring instead. UCX_LOG_LEVEL=info prints the lanes
each endpoint uses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from distx_testing import free_port

SCRIPT = textwrap.dedent(
    """
    import torch, torch.distributed as dist, torch_distx
    dist.init_process_group("distx")
    t = torch.ones(1 << 20)
    dist.all_reduce(t)
    assert t[0].item() == dist.get_world_size()
    dist.destroy_process_group()
    """
)


@pytest.mark.timeout(120)
def test_same_host_ranks_use_shared_memory_with_liveness_on(tmp_path):
    script = tmp_path / "lanes.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, UCX_LOG_LEVEL="info", DISTX_LIVENESS="1")
    env.pop("UCX_TLS", None)
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
         str(script)],
        env=env, capture_output=True, text=True, timeout=110,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lanes = [line for line in (out.stdout + out.stderr).splitlines() if "ep_cfg" in line and "tag(" in line]
    assert lanes, out.stderr[-3000:]
    for line in lanes:
        tag_lanes = line.split("tag(", 1)[1].split(")", 1)[0]
        assert "tcp" not in tag_lanes, line
        assert any(t in tag_lanes for t in ("sysv", "posix", "cma")), line
