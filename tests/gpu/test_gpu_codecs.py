"""The CUDA codec kernels (csrc/compression/*.cu) against the CPU codecs, on
the same inputs, through torch.ops.distx: fp16/bf16 encode and decode bit for
bit (values in range, overflow, subnormals, NaN/inf), top-k by set equality of
the selected (index, value) pairs and exactly on the error-feedback residual
and the decoded dense tensor."""

from __future__ import annotations

import pytest


def _inputs(n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 10
    if n >= 16:
        x[:4] = torch.tensor([70000.0, -70000.0, 1e-8, -3e-39])  # overflow, subnormal, tiny
        x[4:8] = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0])
    return x


@pytest.mark.parametrize("codec", ["fp16", "bf16"])
@pytest.mark.parametrize("n", [0, 1, 17, 4099, 1 << 20])
@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_cast_codecs_bit_exact(codec, n, scale):
    import torch
    import torch_distx.ops as ops

    enc = getattr(ops, f"{codec}_encode")
    dec = getattr(ops, f"{codec}_decode")
    x = _inputs(n, n)
    cpu = enc(x, scale)
    gpu = enc(x.cuda(), scale)
    assert torch.equal(cpu.view(torch.int16), gpu.cpu().view(torch.int16))
    back_cpu = dec(cpu, scale)
    back_gpu = dec(cpu.cuda(), scale)
    # NaN == NaN bit for bit: compare the raw float bits.
    assert torch.equal(back_cpu.view(torch.int32), back_gpu.cpu().view(torch.int32))


@pytest.mark.parametrize("n,k", [(1, 1), (1000, 10), (4099, 41), (1 << 20, 10486)])
def test_topk_same_selection(n, k):
    import torch
    import torch_distx.ops as ops

    x = torch.randn(n, generator=torch.Generator().manual_seed(k))
    cpu = ops.topk_encode(x, k)
    gpu = ops.topk_encode(x.cuda(), k).cpu()
    as_set = lambda p: set(map(tuple, p.view(-1, 2).tolist()))  # noqa: E731
    assert as_set(cpu) == as_set(gpu)
    assert torch.equal(ops.topk_decode(cpu, n), ops.topk_decode(gpu.cuda(), n).cpu())


def test_topk_error_feedback_residual():
    import torch
    import torch_distx.ops as ops

    n, k = 50_000, 500
    g = torch.randn(n, generator=torch.Generator().manual_seed(3))
    r_cpu = torch.randn(n, generator=torch.Generator().manual_seed(4)) * 0.01
    r_gpu = r_cpu.cuda()
    p_cpu = ops.topk_encode_ef(g, r_cpu, k)
    p_gpu = ops.topk_encode_ef(g.cuda(), r_gpu, k).cpu()
    as_set = lambda p: set(map(tuple, p.view(-1, 2).tolist()))  # noqa: E731
    assert as_set(p_cpu) == as_set(p_gpu)
    assert torch.equal(r_cpu, r_gpu.cpu())
