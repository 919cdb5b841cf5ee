"""Sparse COO all_reduce (ReduceOp.SUM) on distx behaves like Gloo's.

Gloo's semantics (ProcessGroupGloo.cpp, AsyncSparseAllreduceWork), which distx
follows (csrc/backend/collectives_sparse.cpp, Note [Sparse all-reduce]):
- the input tensor is overwritten in place with the sum (its indices and
  values are replaced); work.result() and the Future's value are that tensor;
- the result is coalesced, whatever the inputs were (uncoalesced inputs are
  coalesced first); nnz may differ per rank, 0 included;
- sizes, sparse_dim and dense_dim (and here also dtype) must match across
  ranks; only ReduceOp.SUM is allowed.

Each case runs the same worker on distx and on Gloo and compares the results
bit for bit (both sum the ranks' parts in rank order), and against the sum of
the dense versions computed here. DDP with a sparse nn.Embedding trains to the
same parameters on both backends.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from distx_testing import run_ranks

# ------------------------------------------------------------------ inputs


def _sparse(indices: list, values: torch.Tensor, size: tuple) -> torch.Tensor:
    idx = torch.tensor(indices, dtype=torch.int64).reshape(len(size) - (values.dim() - 1), -1)
    return torch.sparse_coo_tensor(idx, values, size, check_invariants=True)


def _input(case: str, rank: int, ws: int) -> torch.Tensor:
    """Rank `rank`'s input for `case`: closed form, so every process builds it."""
    g = torch.Generator().manual_seed(1000 * rank + len(case))
    if case == "f32-nnz-differs":  # rank r has r+1 entries, overlapping at index 0
        n = rank + 1
        return _sparse([(3 * j) % 10 for j in range(n)], torch.arange(n, dtype=torch.float32) / 4 + rank, (10,))
    if case == "f64-nnz0-on-some":  # even ranks contribute nothing
        if rank % 2 == 0:
            return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0), (6, 5),
                                           dtype=torch.float64, check_invariants=True)
        return _sparse([[rank, 0, 5], [1, 4, rank]], torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64), (6, 5))
    if case == "nnz0-everywhere":
        return torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, 3), (7, 3),
                                       check_invariants=True)
    if case == "uncoalesced":  # duplicate indices within a rank
        t = _sparse([[2, 0, 2, 2, rank]], torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5]), (4,))
        assert not t.is_coalesced()
        return t
    if case == "hybrid-dense_dim":  # sparse_dim 2, dense_dim 2: values of shape (nnz, 2, 3)
        n = 2 + rank
        idx = [[j % 3 for j in range(n)], [(j + rank) % 4 for j in range(n)]]
        vals = torch.arange(n * 6, dtype=torch.float32).reshape(n, 2, 3) / 8 - rank
        return _sparse(idx, vals, (3, 4, 2, 3))
    if case == "int64":
        return _sparse([[0, rank, 9]], torch.tensor([7, -3, rank * 100], dtype=torch.int64), (10,))
    if case == "int32-dense_dim":
        return _sparse([[rank % 2]], torch.tensor([[rank, 1, -2]], dtype=torch.int32), (2, 3))
    if case == "random-f32":  # rounding differs with summation order: checks rank order
        idx = torch.randint(0, 40, (1, 60), generator=g)
        vals = torch.randn(60, 2, generator=g) * torch.logspace(-4, 4, 60).unsqueeze(1)
        return torch.sparse_coo_tensor(idx, vals, (40, 2), check_invariants=True)
    raise KeyError(case)


CASES = ["f32-nnz-differs", "f64-nnz0-on-some", "nnz0-everywhere", "uncoalesced", "hybrid-dense_dim",
         "int64", "int32-dense_dim", "random-f32"]


def _reference(case: str, ws: int) -> torch.Tensor:
    """Sum of the dense versions, in rank order: exact to the bit (each rank's
    own duplicates are summed first, as coalesce() does)."""
    return sum(_input(case, r, ws).coalesce().to_dense() for r in range(ws))


# ------------------------------------------------------------------ workers


def _cases_worker(rank: int, ws: int) -> dict:
    warnings.simplefilter("ignore", UserWarning)
    out = {}
    for case in CASES:
        t = _input(case, rank, ws)
        if case == "random-f32":  # async: the Work's result and the Future's value are the input
            work = dist.all_reduce(t, async_op=True)
            fut_value = work.get_future().wait()[0]
            work.wait()
            res = work.result()[0]
            assert fut_value.is_sparse and res.is_sparse
            assert torch.equal(fut_value.to_dense(), t.to_dense()) and torch.equal(res.to_dense(), t.to_dense())
            assert fut_value._indices().data_ptr() == t._indices().data_ptr()
        else:
            dist.all_reduce(t)
        out[case] = t
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ws", [2, 3])
def test_sparse_all_reduce_matches_gloo_and_reference(ws: int) -> None:
    got = run_ranks(_cases_worker, ws, timeout=45)
    gloo = run_ranks(_cases_worker, ws, backend="gloo", timeout=45)
    for case in CASES:
        ref = _reference(case, ws)
        for rank in range(ws):
            t, g = got[rank][case], gloo[rank][case]
            where = f"{case}, rank {rank} of {ws}"
            assert t.is_sparse and t.is_coalesced(), where
            assert t.dtype == ref.dtype and t.shape == ref.shape, where
            assert (t.sparse_dim(), t.dense_dim()) == (g.sparse_dim(), g.dense_dim()), where
            assert torch.equal(t._indices(), g._indices()), f"{where}: indices differ from gloo"
            assert torch.equal(t._values(), g._values()), f"{where}: values differ from gloo"
            assert torch.equal(t.to_dense(), ref), f"{where}: differs from the dense reference"
            assert torch.equal(t._values(), got[0][case]._values()), f"{where}: ranks disagree"


# ------------------------------------------------------------------ errors


def _errors_worker(rank: int, ws: int) -> dict:
    warnings.simplefilter("ignore", UserWarning)
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    out: dict = {}
    # Ops other than SUM are refused on the caller's thread (no sequence number).
    seq = backend._get_sequence_number_for_group()
    for op in (dist.ReduceOp.MAX, dist.ReduceOp.AVG, dist.ReduceOp.PRODUCT):
        try:
            dist.all_reduce(_input("int64", rank, ws), op=op)
            out[str(op)] = None
        except Exception as e:  # noqa: BLE001
            out[str(op)] = (type(e).__name__, str(e))
    out["seq-consumed"] = backend._get_sequence_number_for_group() - seq
    # Mismatches across ranks: every rank gets the same clear error, no hang.
    mismatches = {
        "size": torch.zeros(4 + (rank == 1), 3).to_sparse(1),
        "dtype": torch.zeros(4, 3, dtype=torch.float64 if rank == 1 else torch.float32).to_sparse(1),
        "sparse_dim": torch.zeros(4, 3).to_sparse(2 if rank == 1 else 1),
    }
    for name, t in mismatches.items():
        try:
            dist.all_reduce(t)
            out[name] = None
        except Exception as e:  # noqa: BLE001
            out[name] = (type(e).__name__, str(e))
    t = torch.full((3,), float(rank))  # the group still works
    dist.all_reduce(t)
    out["after"] = t.tolist()
    return out


@pytest.mark.timeout(60)
def test_sparse_all_reduce_errors() -> None:
    ws = 3
    outs = run_ranks(_errors_worker, ws, timeout=45, pg_timeout=10)
    for rank, out in enumerate(outs):
        for op in ("MAX", "AVG", "PRODUCT"):
            typ, msg = out[str(getattr(dist.ReduceOp, op))]
            assert typ == "TypeError", (rank, op, typ, msg)
            assert "distx all_reduce" in msg and f"ReduceOp.{op}" in msg and "SUM" in msg, msg
        assert out["seq-consumed"] == 0, out["seq-consumed"]
        for name, fragment in (("size", "size [5, 3]"), ("dtype", "Double"), ("sparse_dim", "sparse_dim 2")):
            assert out[name] is not None, f"rank {rank}: {name} mismatch did not raise"
            typ, msg = out[name]
            assert typ == "DistBackendError", (rank, name, typ, msg)
            assert "different sparse tensors" in msg and "rank 1: " in msg and fragment in msg, msg
        assert out["after"] == [float(sum(range(ws)))] * 3


# ------------------------------------------------------------------ DDP


class _EmbedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8, sparse=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(1))


def _ddp_worker(rank: int, ws: int, steps: int) -> dict:
    torch.manual_seed(7 + rank)  # ranks start apart: DDP must broadcast rank 0's weights
    ddp = nn.parallel.DistributedDataParallel(_EmbedNet())
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(100 + rank)
    for _ in range(steps):
        ids = torch.randint(0, 50, (6, 4), generator=data)  # each rank touches different rows
        y = torch.randn(6, 3, generator=data)
        opt.zero_grad()
        nn.functional.mse_loss(ddp(ids), y).backward()
        assert ddp.module.emb.weight.grad.is_sparse
        opt.step()
    return {k: v.detach().clone() for k, v in ddp.module.state_dict().items()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ws", [2, 3])
def test_ddp_sparse_embedding_matches_gloo(ws: int) -> None:
    got = run_ranks(_ddp_worker, ws, 4, timeout=45)
    gloo = run_ranks(_ddp_worker, ws, 4, backend="gloo", timeout=45)
    torch.manual_seed(7)
    start = _EmbedNet().state_dict()
    # With 3 ranks the dense Linear gradients are summed in another order than
    # Gloo's ring (see test_ddp.py), and the embedding's gradients depend on them.
    tol = dict(rtol=0, atol=0) if ws == 2 else dict(rtol=1e-5, atol=1e-6)
    for rank in range(ws):
        for name, p in got[rank].items():
            torch.testing.assert_close(p, gloo[rank][name], **tol, msg=f"rank {rank}: {name} differs from gloo")
            assert torch.equal(p, got[0][name]), f"rank {rank}: {name} differs from rank 0"
    assert not torch.equal(got[0]["emb.weight"], start["emb.weight"]), "the embedding did not train"
