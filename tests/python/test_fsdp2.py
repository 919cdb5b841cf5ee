"""FSDP2 (fully_shard) and DeviceMesh on CPU: the same training run on distx
and on gloo ends with the same parameters and losses.

FSDP2 drives all_gather_into_tensor (parameter unshard), reduce_scatter_tensor
with AVG or PREMUL_SUM (gradient reduction) and, on a 2-D mesh (HSDP),
all_reduce over the replicate dimension. DeviceMesh builds its dimension groups
with new_group on CPU (split_group is only tried with an accelerator bound).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from distx_testing import run_ranks

pytestmark = pytest.mark.timeout(300)


def _train(rank: int, ws: int, mesh_shape: tuple[int, ...], steps: int, divide_factor: float | None) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    ops: set[str] = set()  # the reduce ops FSDP2 asked for (gradient reduce-scatter, HSDP all-reduce)
    for fn_name in ("reduce_scatter_single", "reduce_scatter_tensor", "all_reduce"):
        _spy(fn_name, ops)
    names = ("replicate", "shard")[-len(mesh_shape):]
    mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=names)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 33), torch.nn.ReLU(), torch.nn.Linear(33, 7),
                                torch.nn.ReLU(), torch.nn.Linear(7, 5))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if divide_factor is not None:
        # distx reduces the gradients with PREMUL_SUM(1 / factor). Gloo has no
        # PREMUL_SUM, so its reference run reduces with SUM and divides after.
        on_gloo = dist.get_backend() == "gloo"
        for module in model.modules():
            if hasattr(module, "set_gradient_divide_factor"):
                module.set_gradient_divide_factor(divide_factor)
                module.set_force_sum_reduction_for_comms(on_gloo)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(100 + rank)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=gen), torch.randn(8, 5, generator=gen)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    params = [p.full_tensor().detach().clone() for p in model.parameters()]
    groups = {name: dist.get_backend(mesh.get_group(name)) for name in names}
    return {"params": params, "losses": losses, "groups": groups, "ops": ops}


def _spy(fn_name: str, ops: set[str]) -> None:
    """Records the op of every call of torch.distributed.<fn_name> (FSDP2 calls
    them through the module, so the patched attribute is what it finds)."""
    real = getattr(dist, fn_name)

    def call(*args, **kwargs):
        op = kwargs.get("op", args[2] if len(args) > 2 else dist.ReduceOp.SUM)
        ops.add(f"{fn_name}:{getattr(op, 'op', op).name}")  # ReduceOp (PREMUL_SUM) or RedOpType
        return real(*args, **kwargs)

    setattr(dist, fn_name, call)


@pytest.mark.parametrize("ws,mesh_shape,divide_factor",
                         [(2, (2,), None), (3, (3,), None), (2, (2,), 5.0), (4, (2, 2), None)],
                         ids=["P2-fsdp-avg", "P3-fsdp-uneven", "P2-fsdp-premul-sum", "P4-hsdp-2x2"])
def test_fully_shard_matches_gloo(ws: int, mesh_shape: tuple[int, ...], divide_factor: float | None) -> None:
    # 3 ranks shard dims of 33, 7 and 5 rows unevenly (FSDP2 pads the last shard).
    args = (mesh_shape, 4, divide_factor)
    ref = run_ranks(_train, ws, *args, backend="gloo", timeout=240)
    got = run_ranks(_train, ws, *args, backend="distx", timeout=240)
    want_op = "PREMUL_SUM" if divide_factor is not None else "AVG"
    assert f"reduce_scatter_single:{want_op}" in got[0]["ops"], got[0]["ops"]
    if len(mesh_shape) == 2:
        assert "all_reduce:AVG" in got[0]["ops"], got[0]["ops"]
    for rank in range(ws):
        assert set(got[rank]["groups"].values()) == {"distx"}, got[rank]["groups"]
        assert got[rank]["losses"] == pytest.approx(ref[rank]["losses"], rel=1e-5, abs=1e-6)
        assert len(got[rank]["params"]) == len(ref[rank]["params"])
        for i, (a, b) in enumerate(zip(ref[rank]["params"], got[rank]["params"])):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m: f"rank {rank} param {i}: {m}")
    # Training really happened and the ranks agree on the parameters.
    assert got[0]["losses"][0] != got[0]["losses"][-1]
    for rank in range(1, ws):
        for a, b in zip(got[0]["params"], got[rank]["params"]):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
