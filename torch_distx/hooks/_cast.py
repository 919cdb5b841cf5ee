"""fp16 / bf16 DDP comm hooks over torch.ops.distx casts.

Like PyTorch's ``fp16_compress_hook``: each rank sends ``fp16(grad / P)`` in an
all-reduce, and the sum is cast back. The difference is the overflow guard.
A gradient entry beyond fp16's range (65504 after dividing by P) encodes as
``inf`` instead of being clamped; the infinity survives the sum, so every rank
sees the same non-finite result and agrees, with no extra message, that the
bucket overflowed. At the end of the step (the last bucket's hook, on the
autograd thread, in bucket order on every rank) such buckets are re-sent as a
dense fp32 all-reduce of the original gradients: the *fall back* choice. A
gradient that is itself NaN/inf also takes this path and ends up exactly as a
dense all-reduce would leave it (so an AMP GradScaler still sees it).
bf16 shares fp32's exponent range, so it only falls back on NaN/inf gradients.
"""


import time
from typing import Callable

import torch
import torch.distributed as dist

from .. import ops as _ops  # noqa: F401  (registers torch.ops.distx.*)
from ._stats import CompressionStats, _Recorder, ring_allreduce_bytes

__all__ = ["CastState", "fp16_hook", "bf16_hook"]


class _Pending:
    __slots__ = ("index", "buffer", "decoded", "result")

    def __init__(self, index: int, buffer: torch.Tensor, decoded: torch.futures.Future,
                 result: torch.futures.Future):
        self.index = index
        self.buffer = buffer
        self.decoded = decoded  # completes with True (result set) or False (overflowed)
        self.result = result


class CastState:
    """State of :func:`fp16_hook` / :func:`bf16_hook`: the process group, the
    buckets of the current step, and :class:`CompressionStats` (``state.stats``).

    Pass ``None`` or a process group instead to share one state per group.
    """

    __slots__ = ("process_group", "_recorder", "_pending")

    def __init__(self, process_group: dist.ProcessGroup | None = None):
        self.process_group = process_group
        self._recorder = _Recorder()
        self._pending: list[_Pending] = []

    @property
    def stats(self) -> CompressionStats:
        return self._recorder.stats

    def __getstate__(self) -> dict:
        return {"stats": self._recorder.stats}

    def __setstate__(self, state: dict) -> None:
        self.process_group = None
        self._recorder = _Recorder(state["stats"])
        self._pending = []


_SHARED: dict[int, CastState] = {}


def _state_for(state) -> CastState:
    if isinstance(state, CastState):
        return state
    if state is not None and not isinstance(state, dist.ProcessGroup):
        raise TypeError(f"expected a CastState, a ProcessGroup or None as hook state, got {type(state).__name__}")
    key = id(state)
    if key not in _SHARED:
        _SHARED[key] = CastState(state)
    return _SHARED[key]


def _cast_hook(name: str, encode: Callable, decode_into: Callable, state, bucket: dist.GradBucket
               ) -> torch.futures.Future[torch.Tensor]:
    st = _state_for(state)
    rec = st._recorder
    group = st.process_group
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    n = buf.numel()

    t0 = time.perf_counter()
    payload = encode(buf, 1.0 / world)
    rec.bucket(dense=ring_allreduce_bytes(4 * n, world), sent=ring_allreduce_bytes(2 * n, world),
               seconds=time.perf_counter() - t0)
    result: torch.futures.Future = torch.futures.Future(devices=[buf.device] if buf.is_cuda else None)

    def unpack(fut: torch.futures.Future) -> bool:
        try:
            t = time.perf_counter()
            # Straight into the bucket when it is float32; the decode writes
            # nothing if the sum holds NaN/inf, so the gradient stays for the fallback.
            direct = buf.dtype == torch.float32 and buf.is_contiguous()
            out = buf if direct else torch.empty(n, dtype=torch.float32, device=buf.device)
            finite = int(decode_into(fut.value()[0], out, 1.0)) == 0
            rec.extra(seconds=time.perf_counter() - t)
            if finite:
                result.set_result(out if direct else out.to(buf.dtype))
            return finite
        except Exception as e:  # surface it on the hook's future too
            result.set_exception(e)
            raise

    decoded = dist.all_reduce(payload, group=group, async_op=True).get_future().then(unpack)
    st._pending.append(_Pending(bucket.index(), buf, decoded, result))
    if bucket.is_last():
        _finish_step(st, name, world)
    return result


def _finish_step(st: CastState, name: str, world: int) -> None:
    """Re-sends overflowed buckets densely, in bucket order (same on every rank)."""
    pending, st._pending = st._pending, []
    rec = st._recorder
    for p in pending:
        if p.decoded.wait():
            continue
        rec.log_once("overflow", "torch_distx %s_hook: bucket %d overflowed %s or holds NaN/inf; re-sent in fp32 "
                     "(logged once; see state.stats.dense_fallbacks)", name, p.index, name)
        dense = p.buffer.div(world)
        dist.all_reduce(dense, group=st.process_group)
        rec.extra(sent=ring_allreduce_bytes(dense.element_size() * dense.numel(), world), fallback="overflow")
        p.result.set_result(dense)
    rec.step()


def fp16_hook(state: CastState | dist.ProcessGroup | None, bucket: dist.GradBucket
              ) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: all-reduce ``fp16(grad / P)``, with the overflow fallback
    described in this module. Register with
    ``ddp.register_comm_hook(CastState(), fp16_hook)``."""
    return _cast_hook("fp16", torch.ops.distx.fp16_encode, torch.ops.distx.fp16_decode_into, state, bucket)


def bf16_hook(state: CastState | dist.ProcessGroup | None, bucket: dist.GradBucket
              ) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: all-reduce ``bf16(grad / P)``; as :func:`fp16_hook`."""
    return _cast_hook("bf16", torch.ops.distx.bf16_encode, torch.ops.distx.bf16_decode_into, state, bucket)
