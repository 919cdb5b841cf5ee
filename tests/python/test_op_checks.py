"""The argument checks both devices share (Note [One check layer],
csrc/backend/op_checks.hpp): each check of csrc/backend/op_checks.cpp raises
the ValueError / TypeError text asserted here, before anything is queued.

The CUDA half (csrc/backend/cuda/) calls the same functions with the same
arguments, so its messages are these. No test here can call it: it is
compiled only against a CUDA torch, and only CUDA tensors, which need a GPU,
reach it. What can be checked without one is that it takes its checks from
that layer: every function of op_checks.hpp is called by both halves, and the
CUDA overrides raise no ValueError or TypeError of their own but the CUDA-only
ones (NCCL's reductions, a receive from any source)."""

from __future__ import annotations

import os
import re
import warnings

import pytest
import torch
import torch.distributed as dist
from torch._C._distributed_c10d import (AllgatherOptions, AllToAllOptions, BroadcastOptions, GatherOptions,
                                        ReduceOptions, ReduceScatterOptions, ScatterOptions)

from distx_testing import run_ranks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND = os.path.join(ROOT, "csrc", "backend")
P = 2


def _b():
    return dist.group.WORLD._get_backend(torch.device("cpu"))


def _pg():
    return dist.group.WORLD


def _opts(cls, **fields):
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def _t(n: int = 3, dtype=torch.float32) -> torch.Tensor:
    return torch.ones(n, dtype=dtype)


def _bad_calls(rank: int, ws: int) -> dict:
    """name -> (exception, message fragments, call); every rank's call raises
    (a call that passed on one rank would start a collective the others skip)."""
    b, pg, f = _b, _pg, _t
    root_list = "the root needs one {0} list of 2 tensors (the group size), got {1}"
    not_root = "only the root (rank 0) passes an {0} list; rank 1 got 2 {0}s"
    gather_lists = [[f()] * (ws + 1)] if rank == 0 else [[f()] * ws]
    scatter_lists = [[f()] * (ws + 1)] if rank == 0 else [[f()] * ws]
    return {
        # ranks
        "root-reduce": (ValueError, ["distx reduce: root rank 2 is outside 0..1"],
                        lambda: b().reduce([f()], _opts(ReduceOptions, rootRank=ws))),
        "rootTensor-reduce": (ValueError, ["distx reduce: rootTensor must be 0, got 1"],
                              lambda: b().reduce([f()], _opts(ReduceOptions, rootTensor=1))),
        "rootTensor-broadcast": (ValueError, ["distx broadcast: rootTensor must be 0, got 1"],
                                 lambda: b().broadcast([f()], _opts(BroadcastOptions, rootTensor=1))),
        "root-gather": (ValueError, ["distx gather: root rank -1 is outside 0..1"],
                        lambda: b().gather([[f()] * ws], [f()], _opts(GatherOptions, rootRank=-1))),
        "peer-send": (ValueError, ["distx send: destination rank 2 is outside 0..1"],
                      lambda: pg().send([f()], ws, 0)),
        "peer-recv": (ValueError, ["distx recv: source rank -1 is outside 0..1"],
                      lambda: pg().recv([f()], -1, 0)),
        # gather / scatter: Gloo's rule, the root's list and nobody else's
        "list-gather": (ValueError, [f"distx gather: {root_list.format('output', '3 tensors')}"
                                     if rank == 0 else f"distx gather: {not_root.format('output')}"],
                        lambda: b().gather(gather_lists, [f()], GatherOptions())),
        "lists-gather": (ValueError, [f"distx gather: {root_list.format('output', '2 lists')}"
                                      if rank == 0 else f"distx gather: {not_root.format('output')}"],
                         lambda: b().gather([[f()], [f()]] if rank == 0 else [[f()] * ws], [f()],
                                            GatherOptions())),
        "list-scatter": (ValueError, [f"distx scatter: {root_list.format('input', '3 tensors')}"
                                      if rank == 0 else f"distx scatter: {not_root.format('input')}"],
                         lambda: b().scatter([f()], scatter_lists, ScatterOptions())),
        "dtype-scatter": (TypeError, ["distx scatter: tensor 1 has dtype Double but the input has Float"],
                          lambda: b().scatter([f()], [[f(), f(dtype=torch.float64)]],
                                              _opts(ScatterOptions, rootRank=rank))),
        # one list of P tensors
        "lists-all_gather": (ValueError, ["distx all_gather: expected one output list, got 2"],
                             lambda: b().allgather([[f()] * ws] * 2, [f()], AllgatherOptions())),
        "lists-reduce_scatter": (ValueError, ["distx reduce_scatter: expected one input list, got 2"],
                                 lambda: b().reduce_scatter([f()], [[f()] * ws] * 2, ReduceScatterOptions())),
        "length-reduce_scatter": (
            ValueError, ["distx reduce_scatter: the input list has 3 tensors but the group has 2 ranks"],
            lambda: b().reduce_scatter([f()], [[f()] * (ws + 1)], ReduceScatterOptions())),
        "size-reduce_scatter": (
            ValueError, ["distx reduce_scatter: tensor 1 has 4 elements but the input has 3"],
            lambda: b().reduce_scatter([f()], [[f(), f(4)]], ReduceScatterOptions())),
        "empty-all_reduce_coalesced": (ValueError, ["distx all_reduce_coalesced: got no tensors"],
                                       lambda: b().allreduce_coalesced([])),
        # all_gather_coalesced
        "lists-all_gather_coalesced": (
            ValueError, ["distx all_gather_coalesced: got 3 output lists but the group has 2 ranks"],
            lambda: b().allgather_coalesced([[f()]] * (ws + 1), [f()])),
        "length-all_gather_coalesced": (
            ValueError, ["distx all_gather_coalesced: output list 0 has 2 tensors but there are 1 inputs"],
            lambda: b().allgather_coalesced([[f(), f()]] * ws, [f()])),
        "size-all_gather_coalesced": (
            ValueError, ["distx all_gather_coalesced: tensor 0 has 4 elements but the input has 3"],
            lambda: b().allgather_coalesced([[f(4)]] * ws, [f()])),
        # output / input pairs
        "count-all_gather_into_tensor_coalesced": (
            ValueError, ["distx all_gather_into_tensor_coalesced: got 1 outputs for 2 inputs"],
            lambda: pg().allgather_into_tensor_coalesced([f(6)], [f(), f()])),
        "dtype-all_gather_into_tensor_coalesced": (
            TypeError, ["distx all_gather_into_tensor_coalesced: output 1 has dtype Int but input 1 has Float"],
            lambda: pg().allgather_into_tensor_coalesced([f(6), f(6, torch.int32)], [f(), f()])),
        "size-all_gather_into_tensor_coalesced": (
            ValueError, ["distx all_gather_into_tensor_coalesced: output 0 has 5 elements, "
                         "expected world size x input = 6"],
            lambda: pg().allgather_into_tensor_coalesced([f(5)], [f()])),
        "size-reduce_scatter_tensor": (
            ValueError, ["distx reduce_scatter_tensor: input has 7 elements, expected world size x output = 6"],
            lambda: dist.reduce_scatter_tensor(f(3), f(7))),
        "count-reduce_scatter_tensor_coalesced": (
            ValueError, ["distx reduce_scatter_tensor_coalesced: got 2 outputs for 1 inputs"],
            lambda: pg().reduce_scatter_tensor_coalesced([f(), f()], [f(6)])),
        "dtype-reduce_scatter_tensor_coalesced": (
            TypeError, ["distx reduce_scatter_tensor_coalesced: output dtype Double differs from input dtype Float"],
            lambda: pg().reduce_scatter_tensor_coalesced([f(3, torch.float64)], [f(6)])),
        "op-reduce_scatter_tensor_coalesced": (
            TypeError, ["distx reduce_scatter_tensor_coalesced: ReduceOp.BXOR is not defined for dtype Float"],
            lambda: pg().reduce_scatter_tensor_coalesced(
                [f()], [f(6)], _opts(ReduceScatterOptions, reduceOp=dist.ReduceOp.BXOR))),
        # all_to_all
        "count-all_to_all": (
            ValueError, ["distx all_to_all: expected 2 input and 2 output tensors (the group size), got 3 and 2"],
            lambda: pg().alltoall([f()] * ws, [f()] * (ws + 1), AllToAllOptions())),
        "dtype-all_to_all": (
            TypeError, ["distx all_to_all: every tensor must have dtype Float, got input Float and output Long "
                        "for rank 0"],
            lambda: pg().alltoall([f(3, torch.int64)] * ws, [f()] * ws, AllToAllOptions())),
        "self-all_to_all": (
            ValueError, [f"distx all_to_all: rank {rank} sends 3 elements to itself but its output for itself "
                         "holds 5"],
            lambda: pg().alltoall([f(5)] * ws, [f()] * ws, AllToAllOptions())),
        "self-all_to_all_single": (
            ValueError, [f"distx all_to_all_single: rank {rank} sends 4 bytes to itself but its output split "
                         "expects 8"],
            lambda: b().alltoall_base(f(4), f(2), [2, 2], [1, 1], AllToAllOptions())),
        "splits-all_to_all_single": (
            ValueError, ["distx all_to_all_single: 3 input split sizes for a group of 2 ranks"],
            lambda: b().alltoall_base(f(4), f(3), [], [1, 1, 1], AllToAllOptions())),
        "negative-split-all_to_all_single": (
            ValueError, ["distx all_to_all_single: output split size 0 is negative (-1)"],
            lambda: b().alltoall_base(f(2), f(2), [-1, 3], [1, 1], AllToAllOptions())),
        "0d-all_to_all_single": (
            ValueError, ["distx all_to_all_single: the input tensor needs at least one dimension to split"],
            lambda: b().alltoall_base(f(2), torch.tensor(1.0), [], [], AllToAllOptions())),
        "dtype-all_to_all_single": (
            TypeError, ["distx all_to_all_single: output dtype Long differs from input dtype Float"],
            lambda: b().alltoall_base(f(2, torch.int64), f(2), [], [], AllToAllOptions())),
    }


def _raised(call) -> tuple | None:
    """(type, message) of what call() raised; None when it returned."""
    try:
        call()
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    return None


def _worker(rank: int, ws: int) -> dict:
    warnings.simplefilter("ignore", FutureWarning)
    seq_before = _b()._get_sequence_number_for_group()
    out = {name: _raised(call) for name, (_, _, call) in _bad_calls(rank, ws).items()}
    out["seq-consumed"] = _b()._get_sequence_number_for_group() - seq_before
    t = torch.full((4,), float(rank))
    dist.all_reduce(t)  # nothing above reached the wire
    out["after"] = t.tolist()
    # checkUsable: a group shut down refuses collectives and p2p by name
    g = dist.new_group(list(range(ws)), backend="distx")
    gb = g._get_backend(torch.device("cpu"))
    gb.shutdown()
    out["usable-all_reduce"] = _raised(lambda: gb.allreduce([_t()]))
    out["usable-send"] = _raised(lambda: gb.send([_t()], 1 - rank, 0))
    dist.destroy_process_group(g)
    return out


@pytest.fixture(scope="module")
def outcomes() -> list:
    """Every rank's outcome of every call above (one 2-rank world for the module)."""
    return run_ranks(_worker, P, timeout=90, pg_timeout=20)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(_bad_calls(0, P)))
def test_shared_check_raises(outcomes: list, name: str) -> None:
    for rank, out in enumerate(outcomes):
        want, fragments, _ = _bad_calls(rank, P)[name]
        assert out[name] is not None, f"rank {rank}: {name} did not raise"
        typ, msg = out[name]
        assert issubclass(typ, want), f"rank {rank}: {name} raised {typ.__name__}: {msg}"
        assert all(s in msg for s in fragments), f"rank {rank}: {name}: {msg!r} lacks one of {fragments}"


@pytest.mark.timeout(120)
def test_rejected_calls_take_no_sequence_number(outcomes: list) -> None:
    for rank, out in enumerate(outcomes):
        assert out["seq-consumed"] == 0, f"rank {rank}: {out['seq-consumed']}"
        assert out["after"] == [1.0] * 4, f"rank {rank}: {out['after']}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("op", ["all_reduce", "send"])
def test_shut_down_group_is_not_usable(outcomes: list, op: str) -> None:
    for rank, out in enumerate(outcomes):
        got = out[f"usable-{op}"]
        assert got is not None, f"rank {rank}: {op} on a shut-down group did not raise"
        assert f"distx {op}: the process group was shut down or aborted" in got[1], got


# ---------------------------------------------------------------- the CUDA half

CUDA_OVERRIDES = ["collectives_cuda.cpp", "collectives_cuda_p2p.cpp", "collectives_cuda_staged.cpp"]
# What only the CUDA half raises (Note [One check layer]).
CUDA_ONLY = ["is not supported by NCCL", "from any source is not supported"]


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _shared_checks() -> list[str]:
    decl = re.compile(r"^(?!using |struct |namespace |#|//)[A-Za-z][\w:<>&*, ]*?[ &*](\w+)\(", re.M)
    return decl.findall(_read(os.path.join(BACKEND, "op_checks.hpp")))


def test_both_halves_call_every_shared_check() -> None:
    names = _shared_checks()
    assert len(names) >= 12 and "checkUsable" in names and "rootList" in names, names
    cpu = "".join(_read(os.path.join(BACKEND, n)) for n in os.listdir(BACKEND)
                  if n.endswith(".cpp") and n != "op_checks.cpp")
    cuda_dir = os.path.join(BACKEND, "cuda")
    cuda = "".join(_read(os.path.join(cuda_dir, n)) for n in os.listdir(cuda_dir) if n.endswith(".cpp"))
    for name in sorted(set(names)):
        assert re.search(rf"\b{name}\(", cpu), f"no CPU override calls {name}()"
        assert re.search(rf"\b{name}\(", cuda), f"no CUDA override calls {name}()"


def test_cuda_overrides_raise_only_cuda_only_errors() -> None:
    for name in CUDA_OVERRIDES:
        text = _read(os.path.join(BACKEND, "cuda", name))
        for m in re.finditer(r"TORCH_CHECK_(?:VALUE|TYPE)\((.*?)\);", text, re.S):
            assert any(s in m.group(1) for s in CUDA_ONLY), (
                f"csrc/backend/cuda/{name} checks an argument itself (op_checks.hpp has the shared checks): "
                f"{m.group(0)[:200]}")
