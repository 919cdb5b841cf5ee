"""DDP communication hooks that compress gradients with torch.ops.distx codecs.

Use with any backend that has all_reduce and all_gather_into_tensor ("distx",
"gloo", "nccl")::

    from torch_distx.hooks import TopKState, topk_hook, CastState, fp16_hook
    ddp.register_comm_hook(TopKState(ratio=0.01), topk_hook)
    ddp.register_comm_hook(CastState(), fp16_hook)      # or bf16_hook

Every state has ``.stats`` (:class:`CompressionStats`): achieved compression
ratio, bytes sent per step and time spent compressing. See docs/compression.md.
"""

from ._cast import CastState, bf16_hook, fp16_hook
from ._stats import CompressionStats
from ._topk import TopKState, topk_hook

__all__ = ["CastState", "CompressionStats", "TopKState", "bf16_hook", "fp16_hook", "topk_hook"]
