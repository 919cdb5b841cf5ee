"""Hierarchical collectives on one machine, with DISTX_HOSTID making "hosts":
2 nodes x 2 ranks (node-contiguous and interleaved), uneven 3+1, and 2 x 1
(one rank per host: flat). For every dtype and ReduceOp the flat path supports
(AVG and PREMUL_SUM included) all_reduce equals the torch reference and gloo
on the same inputs, at a small size (reduce -> leaders -> broadcast) and a
large one (split-rail on uniform hosts), and is bit-identical on every rank.
Broadcast (hierarchical), all_gather_into_tensor and reduce_scatter_tensor
(node-ordered rings) equal gloo. torch_distx.topology() reports the map, a
sub-group gets its own, and a DISTX_HOSTID changed after the first group is
ignored (the process's host id is pinned). The full dtype matrix runs on the
node-contiguous 2x2, a cross-section of dtypes (every op each) elsewhere.
"""

from __future__ import annotations

import datetime
import hashlib
import os

import pytest
import torch
import torch.distributed as dist

from distx_oracle import ALL_DTYPES, check, gloo_reduced, ops_for, reduce_op, reference, values
from distx_testing import current_store, run_ranks

SMALL = 101  # below leadersMaxBytes (128 KiB) for every dtype: reduce -> leaders -> broadcast
LEADERS_MAX_BYTES = 128 * 1024


def _large(dtype: torch.dtype) -> int:
    """Just above leadersMaxBytes: split-rail on uniform hosts (an odd count, so
    the segments are uneven)."""
    return LEADERS_MAX_BYTES // torch.empty((), dtype=dtype).element_size() + 7

# name: (host id of each rank, the nodes torch_distx.topology() must report)
LAYOUTS = {
    "2x2": (["a", "a", "b", "b"], [[0, 1], [2, 3]]),
    "2x2-interleaved": (["a", "b", "a", "b"], [[0, 2], [1, 3]]),
    "uneven-3+1": (["a", "a", "a", "b"], [[0, 1, 2], [3]]),
    "2x1": (["a", "b"], [[0], [1]]),
}


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _world(rank: int, ws: int, hostids: list[str], dtypes: tuple) -> dict:
    import torch_distx

    os.environ["DISTX_HOSTID"] = hostids[rank]
    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws,
                            timeout=datetime.timedelta(seconds=60))
    gloo = dist.new_group(backend="gloo")
    out: dict = {"topology": torch_distx.topology(), "fail": [], "digest": {}}
    split_rail = not out["topology"]["flat"] and out["topology"]["uniform"]
    fail = out["fail"]
    for dt in dtypes:
        for op in ops_for(dt):
            # split-rail exists only on uniform multi-rank hosts; elsewhere one size
            # covers the one algorithm (leaders, or flat for 2x1)
            for n in (SMALL, _large(dt)) if split_rail else (SMALL,):
                what = f"all_reduce {str(dt)[6:]} {op} n={n}"
                t = values(dt, op, n, rank)
                g = gloo_reduced(t, op, ws, gloo) if n == SMALL else None  # large: the reference
                dist.all_reduce(t, op=reduce_op(op))
                try:
                    check(t, reference(dt, op, n, ws), what + " vs reference", op)
                    if g is not None:
                        check(t, g, what + " vs gloo", op)
                except AssertionError as e:
                    fail.append(str(e))
                out["digest"][what] = _digest(t)
    for n in (SMALL, 40_000):
        for root in range(ws):
            t = values(torch.float32, "SUM", n, rank) if rank == root else torch.zeros(n)
            dist.broadcast(t, src=root)
            if not torch.equal(t, values(torch.float32, "SUM", n, root)):
                fail.append(f"broadcast n={n} root={root}")
        x = values(torch.bfloat16, "SUM", n, rank)
        ag, ag_gloo = torch.empty(ws * n, dtype=x.dtype), torch.empty(ws * n, dtype=x.dtype)
        dist.all_gather_into_tensor(ag, x)
        dist.all_gather_into_tensor(ag_gloo, x, group=gloo)
        if not torch.equal(ag, ag_gloo):
            fail.append(f"all_gather_into_tensor n={n}")
        for op in ("SUM", "AVG", "MAX"):
            x = values(torch.float32, op, ws * n, rank)
            rs = torch.empty(n)
            dist.reduce_scatter_tensor(rs, x, op=reduce_op(op))
            want = reference(torch.float32, op, ws * n, ws)[rank * n:(rank + 1) * n]
            try:
                check(rs, want, f"reduce_scatter_tensor {op} n={n}", op)
            except AssertionError as e:
                fail.append(str(e))
    # A sub-group gets its own map.
    sub = dist.new_group(list(range(1, ws)))
    if rank >= 1:
        out["sub_topology"] = torch_distx.topology(sub)
        t = torch.full((40_000,), float(rank))
        dist.all_reduce(t, group=sub)
        if not torch.equal(t, torch.full((40_000,), float(sum(range(1, ws))))):
            fail.append("sub-group all_reduce")
    # A host id changed after the first group is ignored (pinned per process).
    os.environ["DISTX_HOSTID"] = f"changed-{rank}"
    again = dist.new_group(list(range(ws)))
    out["again_topology"] = torch_distx.topology(again)
    dist.destroy_process_group()
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hierarchical_matches_reference_and_gloo(layout: str) -> None:
    hostids, nodes = LAYOUTS[layout]
    ws = len(hostids)
    # the full dtype matrix on the node-contiguous 2x2; a cross-section elsewhere
    dtypes = ALL_DTYPES if layout == "2x2" else (torch.float32, torch.bfloat16, torch.int8, torch.int64,
                                                 torch.bool, torch.complex64)
    per_rank = run_ranks(_world, ws, hostids, dtypes, backend=None, timeout=100)
    for r, out in enumerate(per_rank):
        assert out["fail"] == [], f"rank {r}: {out['fail'][:5]}"
        topo = out["topology"]
        assert topo["nodes"] == nodes, topo
        assert topo["rank"] == r and topo["size"] == ws
        assert topo["node"] == next(i for i, n in enumerate(nodes) if r in n)
        assert topo["flat"] == (len(nodes) in (1, ws))
        assert topo["uniform"] == (len({len(n) for n in nodes}) == 1)
        assert all(h["from_env"] for h in topo["hosts"])
        assert out["again_topology"]["nodes"] == nodes, "the host id must stay pinned"
        if r >= 1:
            sub_nodes = [[m - 1 for m in n if m >= 1] for n in nodes]
            want = sorted((n for n in sub_nodes if n), key=lambda n: n[0])  # nodes by lowest rank
            assert out["sub_topology"]["nodes"] == want, out["sub_topology"]
        assert out["digest"] == per_rank[0]["digest"], f"rank {r} differs from rank 0 (not bit-identical)"
    if layout == "uneven-3+1":
        assert any("unequal" in n for n in per_rank[0]["topology"]["notes"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("layout", ["2x2", "2x2-interleaved"])
def test_pipelined_split_rail_matches_reference_and_gloo(layout: str) -> None:
    """Note [Pipelined split-rail]: with 4 KiB pieces the split-rail's large
    all-reduces run as 4-32 pieces per segment through shared memory and the
    direct rail (UCX between processes): same results, bit-identical ranks."""
    hostids, nodes = LAYOUTS[layout]
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.int8, torch.int64, torch.bool,
              torch.complex64)
    per_rank = run_ranks(_world, len(hostids), hostids, dtypes, backend=None, timeout=100,
                         env={"DISTX_PIECE_BYTES": "4096"})
    for r, out in enumerate(per_rank):
        assert out["fail"] == [], f"rank {r}: {out['fail'][:5]}"
        assert out["topology"]["nodes"] == nodes
        assert out["digest"] == per_rank[0]["digest"], f"rank {r} differs from rank 0 (not bit-identical)"


def _logged(rank: int, ws: int, log_dir: str) -> tuple[str, str]:
    import torch_distx

    # stderr of forkserver children is the first test's: log to a file of our own
    log = os.path.join(log_dir, f"rank{rank}.log")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    os.environ["DISTX_HOSTID"] = "x" if rank < 2 else "y"
    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws)
    t = torch.ones(300_000)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full_like(t, ws))
    d = torch_distx.topology()["describe"]
    dist.destroy_process_group()
    with open(log) as f:
        return d, f.read()


@pytest.mark.timeout(60)
def test_topology_is_logged_and_local_world_size_disagreement_warned(tmp_path) -> None:
    env = {"DISTX_LOG_LEVEL": "info", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "4"}
    per_rank = run_ranks(_logged, 4, str(tmp_path), backend=None, timeout=50, env=env)
    assert [d for d, _ in per_rank] == ["2 nodes x 2 ranks [0,1] [2,3]"] * 4
    err = "".join(log for _, log in per_rank)
    assert "topology 2 nodes x 2 ranks [0,1] [2,3]: hierarchical" in err, err[-2000:]
    assert "LOCAL_WORLD_SIZE=4 but 2 ranks of this group share this host" in err, err[-2000:]


def _p2p_across_hosts(rank: int, ws: int) -> None:
    """Ranks 0,1 on host "a", 2,3 on host "b": peers on the other host are
    reached through the transport's network worker, those on this host through
    the local one (Note [Network worker]); a receive from any source must find
    messages on either, naming the sender."""
    from test_p2p_groups import (_recv_any_source_arrived_first_case,
                                 _recv_any_source_posted_first_case)

    os.environ["DISTX_HOSTID"] = "ab"[rank // 2]
    dist.init_process_group("distx", store=current_store(), rank=rank, world_size=ws,
                            timeout=datetime.timedelta(seconds=60))
    gloo = dist.new_group(backend="gloo")
    _recv_any_source_posted_first_case(rank, ws, gloo)
    _recv_any_source_arrived_first_case(rank, ws, gloo)
    # Large messages both ways between the hosts (eager on the network worker)
    # and inside each host, exact.
    n = (4 << 20) // 4 + 3
    peer = (rank + 2) % ws
    out = values(torch.float32, "SUM", n, rank)
    got = torch.zeros(n)
    reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, out, peer),
                                   dist.P2POp(dist.irecv, got, peer)])
    for r in reqs:
        r.wait()
    assert torch.equal(got, values(torch.float32, "SUM", n, peer))
    t = values(torch.float32, "SUM", n, rank)
    dist.all_reduce(t)
    check(t, reference(torch.float32, "SUM", n, ws), "all_reduce across hosts", "SUM")
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_p2p_and_any_source_across_hosts() -> None:
    run_ranks(_p2p_across_hosts, 4, backend=None, timeout=100)
