"""distx across simulated hosts (testbed.py): 2 hosts x 2 ranks, torchrun per host,
links throttled to 1 Gbit/s.

- all-reduce equals gloo on the same inputs, bit-identical on every rank, for
  distx's own choice and for each hierarchical algorithm forced by pg_options.algo;
  distx's topology saw 2 hosts of 2 ranks and chose the hierarchical path;
- UCX moves same-host data through shared memory and cross-host data through
  TCP on eth0 (asserted from UCX's own lane log), and the bytes really crossed
  the throttled link (its counters);
- a SIGKILLed rank on host 1 fails the ranks on host 0 within seconds, with an
  error naming it.

Needs root, ip/tc/unshare (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from testbed import Testbed, unavailable_reason  # noqa: E402

pytestmark = pytest.mark.skipif(unavailable_reason() is not None,
                                reason=f"multi-host testbed: {unavailable_reason()}")

HOSTS, PER_HOST = 2, 2
WORLD = HOSTS * PER_HOST
WORKER = os.path.join(HERE, "mh_worker.py")
SHM = ("sysv", "posix", "cma", "xpmem", "knem")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("UCX_TLS", "UCX_NET_DEVICES", "DISTX_HOSTID", "DISTX_ALGO", "UCX_LOG_LEVEL", "UCX_LOG_FILE"):
        env.pop(k, None)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _results(out_dir) -> dict[int, dict]:
    res = {}
    for r in range(WORLD):
        p = out_dir / f"rank{r}.json"
        if p.exists():
            res[r] = json.loads(p.read_text())
    return res


def _show(runs) -> str:
    return "\n".join(f"--- host {r.host} rc={r.returncode}\n{r.output[-2500:]}" for r in runs)


@pytest.fixture(scope="module")
def allreduce_run(tmp_path_factory):
    """One torchrun world (2x2, 1 Gbit/s), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("mh_allreduce")
    with Testbed(HOSTS, "1gbit") as tb:
        before = tb.tx_bytes()
        runs = tb.torchrun(WORKER, ["allreduce", str(out)], nproc_per_host=PER_HOST, timeout=150,
                           env=_env(UCX_LOG_LEVEL="info", DISTX_LOG_LEVEL="info"), master_port=29511)
        sent = [a - b for a, b in zip(tb.tx_bytes(), before)]
        hostnames = [tb.hostname(k) for k in range(HOSTS)]
    return {"runs": runs, "out": out, "res": _results(out), "sent": sent, "hostnames": hostnames}


@pytest.mark.timeout(200)
def test_allreduce_across_hosts_equals_gloo(allreduce_run):
    runs, res = allreduce_run["runs"], allreduce_run["res"]
    assert all(r.returncode == 0 for r in runs), _show(runs)
    assert sorted(res) == list(range(WORLD)), _show(runs)
    for r, rr in res.items():
        # torchrun's ranks k*g..k*g+g-1 live on host k, each host with its own identity.
        assert rr["hostname"] == allreduce_run["hostnames"][r // PER_HOST]
        assert rr["local_world_size"] == PER_HOST
        for c in rr["cases"]:
            assert c["error"] is None, (r, c)
            assert c["same_on_all_ranks"], (r, c)
        assert rr["probe_ok"], rr
    assert len({rr["boot_id"] for rr in res.values()}) == HOSTS
    assert {"hierarchical", "leaders"} <= set(res[0]["algorithms"])
    for r, rr in res.items():
        topo = rr["topology"]
        assert topo["num_nodes"] == HOSTS and topo["ranks_per_node"] == PER_HOST, topo
        assert topo["nodes"] == [[0, 1], [2, 3]] and topo["uniform"] and not topo["flat"], topo
        assert topo["node"] == r // PER_HOST and topo["local_rank"] == r % PER_HOST, topo
    # The selection line distx logs at INFO when the group is created.
    log = "".join(run.output for run in runs)
    assert re.search(r"hierarchical.*split-rail", log), log[-3000:]


@pytest.mark.timeout(200)
def test_ucx_uses_shared_memory_inside_a_host_and_tcp_across(allreduce_run):
    runs, out = allreduce_run["runs"], allreduce_run["out"]
    assert all(r.returncode == 0 for r in runs), _show(runs)
    for r in range(WORLD):
        log = (out / f"ucx.rank{r}.log").read_text()
        lanes = [line.split("tag(", 1)[1].split(")", 1)[0] for line in log.splitlines()
                 if "ep_cfg" in line and "tag(" in line]
        assert lanes, f"rank {r}: no ep_cfg lines in UCX's log:\n{log[-2000:]}"
        shm = [x for x in lanes if any(t in x for t in SHM)]
        tcp = [x for x in lanes if "tcp" in x]
        # The host-mate: shared memory only. The other host's ranks: TCP over
        # the testbed link only (no shm lane: the boot ids differ).
        assert shm and all("tcp" not in x for x in shm), (r, lanes)
        assert tcp and all(not any(t in x for t in SHM) for x in tcp), (r, lanes)
        assert all("eth0" in x for x in tcp), (r, lanes)
    # The probe's 2 x 16 MiB all-reduces had to cross the links: any all-reduce
    # over 2 hosts sends at least N/2 per host per call (reduce-scatter's half).
    probe = allreduce_run["res"][0]["probe_bytes"]
    for k, sent in enumerate(allreduce_run["sent"]):
        assert sent >= probe / 2, (k, allreduce_run["sent"], probe)


@pytest.mark.timeout(200)
def test_sigkilled_rank_on_one_host_fails_the_other_host_naming_it(tmp_path):
    victim = WORLD - 1  # on host 1
    with Testbed(HOSTS, "1gbit") as tb:
        runs = tb.torchrun(WORKER, ["kill", str(tmp_path), str(victim)], nproc_per_host=PER_HOST, timeout=150,
                           env=_env(), master_port=29512)
    res = _results(tmp_path)
    assert victim not in res, res
    # The job fails on both hosts, and not by the testbed's timeout.
    assert all(r.returncode not in (0, -9) for r in runs), _show(runs)
    for r in range(PER_HOST):  # host 0
        assert r in res, _show(runs)
        err = res[r]["error"]
        assert err and err.startswith("DistBackendError"), (r, res[r], _show(runs))
        assert f"peer rank {victim} died" in err, res[r]
        assert res[r]["detect_s"] < 10, res[r]  # the process group's timeout is 120 s


# SIGINT gets Python's own handler first: a shell that starts `make test` in
# the background (`cmd &`, no job control) leaves SIGINT ignored, and the
# testbed rightly keeps an ignored signal ignored after cleaning up.
_UP = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {here!r})
from testbed import Testbed
tb = Testbed(2, "100mbit", prefix="dxtbt").start()
print(tb.name, flush=True)
time.sleep(600)
"""


def _namespaces(name: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(name + "-")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_testbed_namespaces_are_always_removed(sig):
    p = subprocess.Popen([sys.executable, "-c", _UP.format(here=HERE)], stdout=subprocess.PIPE, text=True)
    name = p.stdout.readline().strip()
    assert name and len(_namespaces(name)) == HOSTS + 1, name
    p.send_signal(sig)
    p.wait(timeout=30)
    if sig == signal.SIGKILL:
        # Nothing runs on SIGKILL: the next testbed's start removes what the
        # dead one left (its pid is in the names).
        assert len(_namespaces(name)) == HOSTS + 1
        with Testbed(1, None, prefix="dxtbt"):
            assert _namespaces(name) == []
    assert _namespaces(name) == []
