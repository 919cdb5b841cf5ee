"""Compression codecs as torch custom ops: ``torch.ops.distx.*``.

The kernels are C++ (``csrc/compression``, registered in
``csrc/python/ops_compression.cpp`` for CPU and, in CUDA builds, CUDA). This
module registers their fake (meta) kernels, so ``torch.compile`` can trace
them, and offers typed wrappers:

======================  =====================================================
``fp16_encode(x, s)``   ``fp16(x * s)``, round to nearest even; ``x`` any
                        floating dtype. Values beyond fp16's range become
                        ``±inf`` (never clamped).
``fp16_decode(p, s)``   ``float32(p) * s``
``bf16_encode/decode``  the same for bfloat16
``topk_encode(x, k)``   the ``k`` entries of ``x`` largest in magnitude as an
                        int32 ``[k, 2]`` payload of (index, float32 bits)
                        pairs, indices ascending; ties go to the lower index,
                        NaN ranks above inf above every finite value
``topk_encode_ef(g, r, k)``  top-k of ``g + r``; ``r`` (float32) becomes what
                        was not sent (error feedback), so ``sent + r_new ==
                        g + r_old`` exactly; unsent NaN/inf entries are
                        dropped from ``r``
``topk_decode(p, n, s)``  dense float32 ``[n]``: ``out[i] += v * s`` for each
                        pair of ``p`` (shape ``[..., 2]``) in order;
                        concatenated payloads of several ranks sum
``fp16_decode_into(p, out, s)``  guarded decode into float32 ``out``: returns
                        the number of NaN/inf codes in ``p`` (int64, 0-dim)
                        and writes ``out`` only when it is 0
``bf16_decode_into``    the same for bfloat16
``topk_decode_into(p, out, s)``  ``topk_decode`` into float32 ``out``
======================  =====================================================
"""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (loads the library that defines torch.ops.distx)

__all__ = [
    "fp16_encode",
    "fp16_decode",
    "bf16_encode",
    "bf16_decode",
    "topk_encode",
    "topk_encode_ef",
    "topk_decode",
    "fp16_decode_into",
    "bf16_decode_into",
    "topk_decode_into",
    "topk_count",
    "topk_unpack",
]


@torch.library.register_fake("distx::fp16_encode")
def _fp16_encode_fake(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    torch._check(x.is_floating_point(), lambda: f"expected a floating tensor, got {x.dtype}")
    return x.new_empty(x.shape, dtype=torch.float16)


@torch.library.register_fake("distx::bf16_encode")
def _bf16_encode_fake(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    torch._check(x.is_floating_point(), lambda: f"expected a floating tensor, got {x.dtype}")
    return x.new_empty(x.shape, dtype=torch.bfloat16)


@torch.library.register_fake("distx::fp16_decode")
def _fp16_decode_fake(payload: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    torch._check(payload.dtype == torch.float16, lambda: f"expected a float16 payload, got {payload.dtype}")
    return payload.new_empty(payload.shape, dtype=torch.float32)


@torch.library.register_fake("distx::bf16_decode")
def _bf16_decode_fake(payload: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    torch._check(payload.dtype == torch.bfloat16, lambda: f"expected a bfloat16 payload, got {payload.dtype}")
    return payload.new_empty(payload.shape, dtype=torch.float32)


@torch.library.register_fake("distx::topk_encode")
def _topk_encode_fake(x: torch.Tensor, k: int) -> torch.Tensor:
    torch._check(0 <= k <= x.numel(), lambda: f"k = {k} must be in [0, {x.numel()}]")
    return x.new_empty((k, 2), dtype=torch.int32)


@torch.library.register_fake("distx::topk_encode_ef")
def _topk_encode_ef_fake(grad: torch.Tensor, residual: torch.Tensor, k: int) -> torch.Tensor:
    torch._check(residual.numel() == grad.numel(), lambda: "residual and gradient sizes differ")
    torch._check(0 <= k <= grad.numel(), lambda: f"k = {k} must be in [0, {grad.numel()}]")
    return grad.new_empty((k, 2), dtype=torch.int32)


@torch.library.register_fake("distx::topk_decode")
def _topk_decode_fake(payload: torch.Tensor, numel: int, scale: float = 1.0) -> torch.Tensor:
    torch._check(payload.dtype == torch.int32, lambda: f"expected an int32 payload, got {payload.dtype}")
    return payload.new_empty((numel,), dtype=torch.float32)


@torch.library.register_fake("distx::fp16_decode_into")
def _fp16_decode_into_fake(payload: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    torch._check(payload.dtype == torch.float16, lambda: f"expected a float16 payload, got {payload.dtype}")
    torch._check(out.numel() == payload.numel(), lambda: "out and payload sizes differ")
    return payload.new_empty((), dtype=torch.int64)


@torch.library.register_fake("distx::bf16_decode_into")
def _bf16_decode_into_fake(payload: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    torch._check(payload.dtype == torch.bfloat16, lambda: f"expected a bfloat16 payload, got {payload.dtype}")
    torch._check(out.numel() == payload.numel(), lambda: "out and payload sizes differ")
    return payload.new_empty((), dtype=torch.int64)


@torch.library.register_fake("distx::topk_decode_into")
def _topk_decode_into_fake(payload: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> None:
    torch._check(payload.dtype == torch.int32, lambda: f"expected an int32 payload, got {payload.dtype}")
    return None


def fp16_encode(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return torch.ops.distx.fp16_encode(x, scale)


def fp16_decode(payload: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return torch.ops.distx.fp16_decode(payload, scale)


def bf16_encode(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return torch.ops.distx.bf16_encode(x, scale)


def bf16_decode(payload: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return torch.ops.distx.bf16_decode(payload, scale)


def topk_encode(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.ops.distx.topk_encode(x, k)


def topk_encode_ef(grad: torch.Tensor, residual: torch.Tensor, k: int) -> torch.Tensor:
    return torch.ops.distx.topk_encode_ef(grad, residual, k)


def topk_decode(payload: torch.Tensor, numel: int, scale: float = 1.0) -> torch.Tensor:
    return torch.ops.distx.topk_decode(payload, numel, scale)


def fp16_decode_into(payload: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> int:
    """Decodes into ``out`` unless the payload holds NaN/inf; returns how many it holds."""
    return int(torch.ops.distx.fp16_decode_into(payload, out, scale))


def bf16_decode_into(payload: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> int:
    return int(torch.ops.distx.bf16_decode_into(payload, out, scale))


def topk_decode_into(payload: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> None:
    torch.ops.distx.topk_decode_into(payload, out, scale)


def topk_count(numel: int, ratio: float) -> int:
    """k for a density ratio, as the C++ codec computes it: ``floor(ratio*n + 0.5)``,
    at least 1 when ``ratio > 0`` and ``n > 0``, at most ``n``."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"top-k ratio must be in [0, 1], got {ratio}")
    if numel == 0 or ratio == 0.0:
        return 0
    return min(numel, max(1, int(ratio * numel + 0.5)))


def topk_unpack(payload: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 indices, float32 values) of a top-k payload of shape ``[..., 2]``."""
    pairs = payload.reshape(-1, 2)
    return pairs[:, 0].long(), pairs[:, 1].contiguous().view(torch.float32)
