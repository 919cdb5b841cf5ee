"""End to end under torchrun: `python -m torch.distributed.run` starts the
ranks, rendezvous is env:// (the agent's TCPStore on a free port), the script
asks for backend "distx" by name. Also runs the `make demo` example briefly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from distx_testing import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import torch, torch.distributed as dist
    import torch_distx  # registers "distx"

    dist.init_process_group(backend="distx")  # env:// from torchrun
    rank, world = dist.get_rank(), dist.get_world_size()
    assert dist.get_backend() == "distx", dist.get_backend()
    t = torch.full((1000,), float(rank + 1))
    dist.all_reduce(t)
    gathered = torch.zeros(world, dtype=torch.int64)
    dist.all_gather_into_tensor(gathered, torch.tensor([int(t[0].item()) * 10 + rank]))
    msg = torch.tensor([42 if rank == 0 else 0])
    dist.broadcast(msg, src=0)
    work = dist.all_reduce(torch.ones(3), async_op=True)
    work.wait()
    dist.barrier()
    print(f"rank {rank}/{world} local_rank {__import__('os').environ['LOCAL_RANK']} "
          f"sum {t[0].item():g} gathered {gathered.tolist()} bcast {msg.item()} async {work.is_completed()}",
          flush=True)
    dist.destroy_process_group()
""")


def _torchrun(args: list[str], timeout: float, cwd: str, standalone: bool = False) -> tuple[int, str]:
    """Runs torchrun in its own session; on timeout kills it and its workers.
    standalone: c10d rendezvous on a port torchrun picks (else static, on a free port)."""
    where = ["--standalone"] if standalone else ["--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", *where, *args]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout}s; output:\n{out}", pytrace=False)
    return proc.returncode, out


@pytest.mark.timeout(150)
def test_torchrun_env_init_with_distx(tmp_path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(SCRIPT)
    code, out = _torchrun([str(script)], timeout=120, cwd=str(tmp_path))
    assert code == 0, f"torchrun exited with {code}:\n{out}"
    for rank in range(2):
        line = f"rank {rank}/2 local_rank {rank} sum 3 gathered [30, 31] bcast 42 async True"
        assert line in out, f"missing {line!r} in:\n{out}"


@pytest.mark.timeout(150)
def test_demo_example_trains(tmp_path) -> None:
    """examples/ddp_train.py as `make demo` runs it (fewer epochs): the loss falls
    every few epochs and the held-out accuracy clears 90%."""
    code, out = _torchrun([os.path.join(REPO, "examples", "ddp_train.py"), "--epochs", "8"], timeout=120,
                          cwd=str(tmp_path))
    assert code == 0, f"the demo exited with {code}:\n{out}"
    assert "backend distx, 2 ranks" in out, out
    losses = [float(v) for v in re.findall(r"epoch +\d+/8 +loss ([\d.]+)", out)]
    assert len(losses) == 8, out
    assert losses[-1] < losses[0] / 4, f"loss did not fall: {losses}"
    accuracy = re.search(r"held-out accuracy: ([\d.]+)%", out)
    assert accuracy and float(accuracy.group(1)) > 90.0, out


RESTART_SCRIPT = textwrap.dedent("""
    import os, signal, sys, datetime
    import torch, torch.distributed as dist
    import torch_distx  # registers "distx"

    backend, failure = sys.argv[1], sys.argv[2]
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.full((1000,), float(rank + 1))
    dist.all_reduce(t)
    if attempt == 0 and rank == 1:  # fails after init: the agent restarts every rank
        print(f"attempt 0 rank 1 leaves by {failure}", flush=True)
        if failure == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    sub = dist.new_group([0, 1], backend=backend)
    s = torch.full((10,), float(10 * rank + attempt))
    dist.all_reduce(s, group=sub)
    dist.barrier()
    print(f"attempt {attempt} rank {rank} sum {t[0].item():g} sub {s[0].item():g}", flush=True)
    dist.destroy_process_group()
""")


@pytest.mark.timeout(200)
@pytest.mark.parametrize("rendezvous", ["standalone", "static"])
@pytest.mark.parametrize("failure", ["exit", "kill"])
def test_torchrun_restart_after_a_rank_fails(tmp_path, failure: str, rendezvous: str) -> None:
    """torchrun --max-restarts=1: rank 1 leaves right after init in the first
    attempt (exit code 3, or SIGKILL); the agent restarts both ranks on the same
    store and the second attempt initialises and finishes (Note [Store
    incarnations]). Gloo is run too under DISTX_TEST_LONG=1, for the record
    only: its second attempt reads the first attempt's addresses as well and
    fails to connect now and then (always with static rendezvous). The variants
    other than (kill, standalone) are in `make test-long`."""
    long_run = os.environ.get("DISTX_TEST_LONG") == "1"
    if (rendezvous == "static" or failure == "exit") and not long_run:
        pytest.skip("runs in make test-long")
    script = tmp_path / "restart.py"
    script.write_text(RESTART_SCRIPT)
    if long_run:  # for the record only: gloo reads the first attempt's addresses too, now and then
        code, out = _torchrun(["--max-restarts=1", "--monitor-interval=0.1", str(script), "gloo", failure],
                              timeout=90, cwd=str(tmp_path), standalone=rendezvous == "standalone")
        print(f"gloo ({failure}, {rendezvous}): torchrun exit code {code}")
    for backend in ["distx"]:
        code, out = _torchrun(["--max-restarts=1", "--monitor-interval=0.1", str(script), backend, failure],
                              timeout=90, cwd=str(tmp_path), standalone=rendezvous == "standalone")
        assert code == 0, f"{backend}: torchrun exited with {code}:\n{out}"
        assert f"attempt 0 rank 1 leaves by {failure}" in out, f"{backend}:\n{out}"
        for rank in range(2):
            line = f"attempt 1 rank {rank} sum 3 sub 12"
            assert line in out, f"{backend}: missing {line!r} in:\n{out}"
