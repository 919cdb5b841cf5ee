"""Top-k DDP comm hook with error feedback, in the style of PyTorch's PowerSGD
hook (a state object, residuals kept per bucket, checkpointable).

Per bucket and step: ``a = grad + residual``; the ``k = ratio * n`` entries of
``a`` largest in magnitude go out as (int32 index, float32 value) pairs in an
all-gather; every rank sums all ranks' pairs densely (same order on every rank,
so replicas stay bit-identical) and divides by P; the rest of ``a`` becomes the
new residual (error feedback), so no gradient mass is ever dropped.

Dense fallback (a plain fp32 all-reduce of ``grad + residual``, which also
flushes the residual) is used, and logged once per reason, when

* ``step < warmup_steps`` (early steps move a lot; DDP also rebuilds its
  buckets after the first one),
* the bucket has fewer than ``min_numel`` elements, or
* sparse stops paying: each rank sends ``(P-1) * 8k`` bytes in the all-gather
  against ``2(P-1)/P * 4n`` for a ring all-reduce, so sparse wins only while
  ``k * P < n`` (density * world size < 1) -- the DGC scaling wall.

Bucket rebuilds: each residual is tagged with its bucket's layout (parameter
shapes and storage). When DDP rebuilds buckets, a bucket with a new layout gets
its residual assembled from the residual slices of the same parameters in the
old layout, so error feedback carries over exactly; parameters never seen
before start at zero.
"""


import time

import torch
import torch.distributed as dist

from .. import ops as _ops
from ._stats import CompressionStats, _Recorder, ring_allgather_bytes, ring_allreduce_bytes

__all__ = ["TopKState", "topk_hook"]

# Newer torch deprecates all_gather_into_tensor in favour of all_gather_single.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

_Layout = tuple[tuple[tuple[int, ...], ...], tuple[int, ...] | None]  # shapes, data pointers


def _layout(bucket: dist.GradBucket) -> _Layout:
    params = bucket.parameters()
    return tuple(tuple(p.shape) for p in params), tuple(p.data_ptr() for p in params)


class TopKState:
    """State of :func:`topk_hook`.

    Args:
        ratio: density k/n per bucket, in (0, 1]. 0.01 sends 1 % of the entries
            (k = round(ratio * n), at least 1).
        error_feedback: keep what was not sent and add it to the next step's
            gradient. Without it top-k drops 1 - ratio of the gradient each step.
        warmup_steps: steps that use a dense all-reduce before top-k starts.
        min_numel: buckets smaller than this are all-reduced densely.
        process_group: the group to use (None: the default group).

    ``state.stats`` (:class:`CompressionStats`) reports the achieved compression
    ratio, bytes sent per step and time spent compressing.
    """

    __slots__ = ("process_group", "ratio", "error_feedback", "warmup_steps", "min_numel", "step",
                 "_recorder", "_residuals", "_slots", "_restored", "_restored_at")

    def __init__(self, ratio: float = 0.01, error_feedback: bool = True, warmup_steps: int = 10,
                 min_numel: int = 4096, process_group: dist.ProcessGroup | None = None):
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if warmup_steps < 0 or min_numel < 0:
            raise ValueError("warmup_steps and min_numel must be >= 0")
        self.process_group = process_group
        self.ratio = float(ratio)
        self.error_feedback = bool(error_feedback)
        self.warmup_steps = int(warmup_steps)
        self.min_numel = int(min_numel)
        self.step = 0
        self._recorder = _Recorder()
        # bucket index -> (residual, layout)
        self._residuals: dict[int, tuple[torch.Tensor, _Layout]] = {}
        # parameter data pointer -> (residual tensor, offset, numel): where its residual lives
        self._slots: dict[int, tuple[torch.Tensor, int, int]] = {}
        # from a checkpoint: bucket index -> (residual, shapes), adopted when a bucket matches
        self._restored: dict[int, tuple[torch.Tensor, tuple]] = {}
        self._restored_at = 0

    @property
    def stats(self) -> CompressionStats:
        return self._recorder.stats

    def residual_norm(self) -> float:
        """L2 norm of all residuals (how much gradient is waiting to be sent)."""
        return float(sum(r.double().pow(2).sum() for r, _ in self._residuals.values()) ** 0.5)

    # -- checkpointing (torch.save / pickle)
    def __getstate__(self) -> dict:
        return {
            "ratio": self.ratio, "error_feedback": self.error_feedback, "warmup_steps": self.warmup_steps,
            "min_numel": self.min_numel, "step": self.step, "stats": self._recorder.stats,
            "residuals": {i: (r, layout[0]) for i, (r, layout) in self._residuals.items()},
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["ratio"], state["error_feedback"], state["warmup_steps"], state["min_numel"])
        self.step = state["step"]
        self._recorder = _Recorder(state["stats"])
        self._restored = dict(state["residuals"])
        self._restored_at = self.step
        self._recorder.log_once("restore", "torch_distx TopKState restored at step %d; process_group is not "
                                "saved and is set to None (the default group)", self.step)

    # -- residuals
    def _residual(self, bucket: dist.GradBucket, buf: torch.Tensor) -> torch.Tensor:
        index = bucket.index()
        layout = _layout(bucket)
        current = self._residuals.get(index)
        if current is not None and current[1] == layout:
            return current[0]
        n = buf.numel()
        res = torch.zeros(n, dtype=torch.float32, device=buf.device)
        shapes, ptrs = layout
        offset = 0
        for shape, ptr in zip(shapes, ptrs):
            numel = 1
            for d in shape:
                numel *= d
            old = self._slots.get(ptr)
            if old is not None and old[2] == numel:  # carry this parameter's residual over
                res[offset:offset + numel] = old[0][old[1]:old[1] + numel]
            self._slots[ptr] = (res, offset, numel)
            offset += numel
        if offset != n:
            raise RuntimeError(f"bucket {index}: parameters hold {offset} elements, the buffer {n}")
        restored = self._restored.pop(index, None)
        if restored is not None and restored[1] == shapes:
            res += restored[0].to(res.device)
        if current is not None:
            self._recorder.log_once("rebuild", "torch_distx topk_hook: bucket layout changed (DDP rebuilt its "
                                    "buckets); residuals follow their parameters (logged once)")
        self._residuals[index] = (res, layout)
        return res

    def _dense_input(self, bucket: dist.GradBucket, buf: torch.Tensor) -> torch.Tensor:
        """The gradient plus any residual left from sparse steps (which is then flushed)."""
        current = self._residuals.get(bucket.index())
        if not self.error_feedback or current is None or current[1] != _layout(bucket):
            return buf
        res = current[0]
        out = buf + res.to(buf.dtype)
        res.zero_()
        return out

    def _end_step(self) -> None:
        self.step += 1
        self._recorder.step()
        if self._restored and self.step >= self._restored_at + 2:  # DDP has rebuilt by now
            self._recorder.log_once("restore-drop", "torch_distx TopKState: %d checkpointed residuals matched no "
                                    "bucket and were dropped", len(self._restored))
            self._restored.clear()


def topk_hook(state: TopKState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: top-k sparsification with error feedback (see this
    module's docstring). Register with ``ddp.register_comm_hook(TopKState(), topk_hook)``."""
    if not isinstance(state, TopKState):
        raise TypeError(f"topk_hook needs a TopKState, got {type(state).__name__}")
    rec = state._recorder
    group = state.process_group
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    n = buf.numel()
    k = _ops.topk_count(n, state.ratio)
    dense_bytes = ring_allreduce_bytes(4 * n, world)

    reason = None
    if state.step < state.warmup_steps:
        reason = "warmup"
    elif n < state.min_numel:
        reason = "small_bucket"
    elif k * world >= n:
        reason = "density"
        rec.log_once("density", "torch_distx topk_hook: ratio %g on %d ranks sends at least as many bytes as a "
                     "dense ring all-reduce (k*P >= n); falling back to dense (logged once)", state.ratio, world)

    if reason is not None:
        dense = _dense_input_or_copy(state, bucket, buf)
        dense.div_(world)
        rec.bucket(dense=dense_bytes, sent=ring_allreduce_bytes(dense.element_size() * n, world), fallback=reason)
        fut = dist.all_reduce(dense, group=group, async_op=True).get_future().then(lambda f: f.value()[0])
    else:
        t0 = time.perf_counter()
        grad = buf if buf.dtype == torch.float32 else buf.float()
        if state.error_feedback:
            payload = torch.ops.distx.topk_encode_ef(grad, state._residual(bucket, buf), k)
        else:
            payload = torch.ops.distx.topk_encode(grad, k)
        gathered = payload.new_empty((world * k, 2))
        rec.bucket(dense=dense_bytes, sent=ring_allgather_bytes(8 * k, world), seconds=time.perf_counter() - t0)

        def unpack(f: torch.futures.Future) -> torch.Tensor:
            f.wait()
            t = time.perf_counter()
            direct = buf.dtype == torch.float32 and buf.is_contiguous()
            out = buf if direct else torch.empty(n, dtype=torch.float32, device=buf.device)
            torch.ops.distx.topk_decode_into(gathered.view(world, k, 2), out, 1.0 / world)
            rec.extra(seconds=time.perf_counter() - t)
            return out if direct else out.to(buf.dtype)

        fut = _all_gather(gathered, payload, group=group, async_op=True).get_future().then(unpack)
    if bucket.is_last():
        state._end_step()
    return fut


def _dense_input_or_copy(state: TopKState, bucket: dist.GradBucket, buf: torch.Tensor) -> torch.Tensor:
    # All-reducing the bucket buffer in place is what DDP's default hook does.
    return state._dense_input(bucket, buf) if state.error_feedback else buf
