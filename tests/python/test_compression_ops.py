"""torch.ops.distx.* compression ops: torch.library.opcheck on every op, values
against torch's own casts and a sort-based top-k oracle, the error-feedback
invariant, errors, and torch.compile tracing through the fake kernels."""

from __future__ import annotations

import math

import pytest
import torch

import torch_distx.ops as ops

ALL_OPS = ["fp16_encode", "fp16_decode", "bf16_encode", "bf16_decode", "topk_encode", "topk_encode_ef",
           "topk_decode", "fp16_decode_into", "bf16_decode_into", "topk_decode_into"]


def _samples(name: str) -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g)
    m = torch.randn(7, 13, generator=g)
    if name in ("fp16_encode", "bf16_encode"):
        return [(x, 1.0), (m, 0.25), (torch.empty(0), 1.0), (m.double(), 0.5), (x.clone().requires_grad_(), 0.5)]
    if name == "fp16_decode":
        return [(x.half(), 1.0), (m.half(), 2.0), (torch.empty(0, dtype=torch.half), 1.0)]
    if name == "bf16_decode":
        return [(x.bfloat16(), 1.0), (m.bfloat16(), 0.5)]
    if name == "topk_encode":
        return [(x, 10), (m, 0), (m, m.numel()), (x.double(), 1), (x.clone().requires_grad_(), 3)]
    if name == "topk_encode_ef":
        return [(x, torch.randn(1000, generator=g), 10), (m, torch.zeros(m.numel()), 5), (x, torch.zeros(1000), 0)]
    if name == "topk_decode":
        return [(ops.topk_encode(x, 10), 1000, 1.0),
                (torch.cat([ops.topk_encode(x, 10), ops.topk_encode(-x, 10)]).view(2, 10, 2), 1000, 0.5),
                (torch.empty(0, 2, dtype=torch.int32), 5, 1.0)]
    if name == "fp16_decode_into":
        bad = x.half()
        bad[3] = float("inf")
        return [(x.half(), torch.empty(1000), 0.5), (bad, torch.empty(1000), 1.0), (m.half(), torch.empty(91), 1.0)]
    if name == "bf16_decode_into":
        return [(x.bfloat16(), torch.empty(1000), 1.0)]
    if name == "topk_decode_into":
        return [(ops.topk_encode(x, 10), torch.empty(1000), 1.0),
                (torch.stack([ops.topk_encode(x, 5), ops.topk_encode(-x, 5)]), torch.empty(1000), 0.5)]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ALL_OPS)
def test_opcheck(name):
    op = getattr(torch.ops.distx, name)
    for args in _samples(name):
        torch.library.opcheck(op, args)


# ---------------------------------------------------------------- casts

def _edge_values() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    bits = torch.randint(-2**31, 2**31 - 1, (100000,), generator=g, dtype=torch.int64).to(torch.int32)
    special = torch.tensor([0.0, -0.0, 65504.0, 65519.0, 65520.0, -7e4, 6e-8, 2.9e-8, 3.0e-8, 1e-40,
                            3.3895e38, 3.3896e38, math.inf, -math.inf, float("nan")])
    return torch.cat([special, bits.view(torch.float32)])


def _encode_like_torch(encode, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """encode(edge values, scale), asserted bit-identical to torch's cast of
    x * scale to dtype (NaN where torch has NaN, any payload)."""
    x = _edge_values()
    got = encode(x, scale)
    ref = (x * scale).to(dtype)
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(got), nan)
    assert torch.equal(got[~nan].view(torch.int16), ref[~nan].view(torch.int16))
    return got


@pytest.mark.parametrize("scale", [1.0, 0.25, 1.0 / 3.0])
def test_fp16_matches_torch_cast(scale):
    got = _encode_like_torch(ops.fp16_encode, torch.float16, scale)
    back = ops.fp16_decode(got, 2.0)
    torch.testing.assert_close(back, got.float() * 2.0, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.1])
def test_bf16_matches_torch_cast(scale):
    got = _encode_like_torch(ops.bf16_encode, torch.bfloat16, scale)
    torch.testing.assert_close(ops.bf16_decode(got), got.float(), rtol=0, atol=0, equal_nan=True)


def test_fp16_overflow_becomes_inf_not_clamped():
    x = torch.tensor([65504.0, 65520.0, -1e5, 1.0])
    assert ops.fp16_encode(x).float().tolist() == [65504.0, math.inf, -math.inf, 1.0]
    assert ops.fp16_encode(x, 0.5).float().tolist() == [32752.0, 32768.0, -49984.0, 0.5]


def test_cast_keeps_shape_and_accepts_other_float_dtypes():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    assert ops.fp16_encode(x).shape == (3, 4, 5)
    assert torch.equal(ops.fp16_encode(x), x.float().half())
    xb = torch.randn(17).bfloat16()
    assert torch.equal(ops.bf16_encode(xb), xb)  # bf16 -> fp32 -> bf16 is exact


# ---------------------------------------------------------------- top-k

def _oracle(a: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest |a| (NaN first; ties: lower index), ascending."""
    key = a.view(torch.int32) & 0x7FFFFFFF  # magnitude bits order NaN > inf > finite
    order = torch.sort(key.long(), descending=True, stable=True).indices[:k]
    return order.sort().values


@pytest.mark.parametrize("n,k", [(1, 0), (1, 1), (2, 1), (1009, 10), (100003, 1000), (100003, 100003),
                                 (300007, 3), (300007, 150000)])
def test_topk_matches_oracle(n, k):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    idx, val = ops.topk_unpack(ops.topk_encode(x, k))
    assert torch.equal(idx, _oracle(x, k))
    assert torch.equal(val, x[idx])


def test_topk_ties_and_non_finite():
    x = torch.tensor([1.0, 3.0, -3.0, 7.0, 3.0, -3.0])
    assert ops.topk_unpack(ops.topk_encode(x, 3))[0].tolist() == [1, 2, 3]
    same = torch.full((200001,), 2.0)
    assert torch.equal(ops.topk_unpack(ops.topk_encode(same, 500))[0], torch.arange(500))
    y = torch.tensor([1.0, float("nan"), -math.inf, 2.0, math.inf, 0.5])
    idx, val = ops.topk_unpack(ops.topk_encode(y, 2))
    assert idx.tolist() == [1, 2] and math.isnan(val[0]) and val[1] == -math.inf


def test_topk_error_feedback_invariant_exact():
    n = 123457
    g = torch.Generator().manual_seed(3)
    residual = torch.randn(n, generator=g) * 0.3
    k = ops.topk_count(n, 0.01)
    for _ in range(3):
        grad = torch.randn(n, generator=g)
        a = grad + residual  # fp32, one rounding
        payload = ops.topk_encode_ef(grad, residual, k)  # updates residual in place
        idx, val = ops.topk_unpack(payload)
        assert torch.equal(idx, _oracle(a, k))
        sent = torch.zeros(n).index_put_((idx,), val)
        assert torch.equal(sent + residual, a)
        assert torch.equal(residual[idx], torch.zeros(k))


def test_topk_ef_drops_unsent_non_finite():
    grad = torch.tensor([1.0, float("nan"), -math.inf, 2.0, math.inf, 0.5])
    residual = torch.zeros(6)
    ops.topk_encode_ef(grad, residual, 2)
    assert residual.tolist() == [1.0, 0.0, 0.0, 2.0, 0.0, 0.5]


def test_topk_decode_sums_payloads_in_order():
    g = torch.Generator().manual_seed(4)
    n, k, ranks = 5003, 50, 3
    payloads = [ops.topk_encode(torch.randn(n, generator=g), k) for _ in range(ranks)]
    gathered = torch.stack(payloads)  # [ranks, k, 2] as all_gather_into_tensor makes it
    scale = 1.0 / ranks
    ref = torch.zeros(n)
    for p in payloads:  # the same order and rounding: out[i] += v * scale
        idx, val = ops.topk_unpack(p)
        ref.index_add_(0, idx, val * scale)
    assert torch.equal(ops.topk_decode(gathered, n, scale), ref)


def test_guarded_decode_into():
    x = torch.randn(4097, generator=torch.Generator().manual_seed(6))
    for enc, dec, dt in [(ops.fp16_encode, ops.fp16_decode_into, torch.float16),
                         (ops.bf16_encode, ops.bf16_decode_into, torch.bfloat16)]:
        payload = enc(x, 0.5)
        out = torch.full((4097,), 7.0)
        assert dec(payload, out, 2.0) == 0
        assert torch.equal(out, payload.float() * 2.0)
        payload[[0, 100, 4096]] = torch.tensor([float("inf"), float("nan"), -float("inf")], dtype=dt)
        out.fill_(7.0)
        assert dec(payload, out) == 3
        assert torch.equal(out, torch.full((4097,), 7.0))  # untouched: the caller can still fall back
    p = torch.stack([ops.topk_encode(x, 40), ops.topk_encode(x * 2, 40)])
    out = torch.full((4097,), 3.0)
    ops.topk_decode_into(p, out, 0.5)
    assert torch.equal(out, ops.topk_decode(p, 4097, 0.5))


def test_topk_count_matches_cpp_rounding():
    assert [ops.topk_count(n, r) for n, r in [(0, 0.5), (100, 0.0), (100, 0.01), (10, 0.01), (1000, 0.0015),
                                               (100, 0.07), (7, 1.0)]] == [0, 0, 1, 1, 2, 7, 7]
    with pytest.raises(ValueError):
        ops.topk_count(10, 1.5)


def test_errors_are_typed():
    x = torch.randn(10)
    with pytest.raises(ValueError, match="k = 11"):
        ops.topk_encode(x, 11)
    with pytest.raises(TypeError, match="floating"):
        ops.fp16_encode(torch.arange(4))
    with pytest.raises(TypeError, match="Half"):
        ops.fp16_decode(x)
    with pytest.raises(ValueError, match="residual has 9"):
        ops.topk_encode_ef(x, torch.zeros(9), 1)
    with pytest.raises(TypeError, match="float32"):
        ops.topk_encode_ef(x, torch.zeros(10, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="outside"):
        ops.topk_decode(torch.tensor([[10, 0]], dtype=torch.int32), 10)
    with pytest.raises(ValueError, match="shape"):
        ops.topk_decode(torch.zeros(3, dtype=torch.int32), 10)
    with pytest.raises(ValueError, match="finite"):
        ops.fp16_encode(x, math.inf)
    with pytest.raises(ValueError, match="out has 9"):
        ops.fp16_decode_into(x.half(), torch.empty(9))
    with pytest.raises(TypeError, match="float32"):
        ops.topk_decode_into(ops.topk_encode(x, 1), torch.empty(10, dtype=torch.float64))


def test_torch_compile_traces_ops():
    def step(grad: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        payload = torch.ops.distx.topk_encode_ef(grad, residual, 16)
        dense = torch.ops.distx.topk_decode(payload, grad.numel(), 0.5)
        half = torch.ops.distx.fp16_decode(torch.ops.distx.fp16_encode(grad, 0.5))
        return dense, half

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    grad = torch.randn(1024, generator=torch.Generator().manual_seed(5))
    r_eager, r_compiled = torch.randn(1024) * 0.1, None
    r_compiled = r_eager.clone()
    dense_e, half_e = step(grad, r_eager)
    dense_c, half_c = compiled(grad, r_compiled)
    assert torch.equal(dense_c, dense_e) and torch.equal(half_c, half_e)
    assert torch.equal(r_compiled, r_eager)  # the residual mutation survives functionalisation
