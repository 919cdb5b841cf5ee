"""What a compression hook reports: bytes on the wire against a dense fp32
ring all-reduce, and the time spent compressing."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

logger = logging.getLogger("torch_distx.hooks")


def ring_allreduce_bytes(nbytes: int, world: int) -> int:
    """Bytes one rank sends in a ring all-reduce of nbytes: 2(P-1)/P * S."""
    return 2 * (world - 1) * nbytes // world


def ring_allgather_bytes(nbytes: int, world: int) -> int:
    """Bytes one rank sends in a ring all-gather of nbytes per rank: (P-1) * S."""
    return (world - 1) * nbytes


@dataclass
class CompressionStats:
    """Cumulative counters of one hook state (this rank).

    Bytes follow the ring cost model (what this rank sends); ``dense_bytes`` is
    what an uncompressed fp32 ring all-reduce of the same buckets would send.
    ``compress_seconds`` is wall time in encode and decode, on any thread.
    """

    steps: int = 0
    buckets: int = 0
    dense_bytes: int = 0
    sent_bytes: int = 0
    compress_seconds: float = 0.0
    dense_fallbacks: dict[str, int] = field(default_factory=dict)

    @property
    def compression_ratio(self) -> float:
        """dense_bytes / sent_bytes (1.0 before anything was sent)."""
        return self.dense_bytes / self.sent_bytes if self.sent_bytes else 1.0

    @property
    def bytes_sent_per_step(self) -> float:
        return self.sent_bytes / self.steps if self.steps else float(self.sent_bytes)

    @property
    def compress_seconds_per_step(self) -> float:
        return self.compress_seconds / self.steps if self.steps else self.compress_seconds

    def as_dict(self) -> dict:
        return {
            "steps": self.steps,
            "buckets": self.buckets,
            "compression_ratio": self.compression_ratio,
            "bytes_sent_per_step": self.bytes_sent_per_step,
            "dense_bytes_per_step": self.dense_bytes / self.steps if self.steps else float(self.dense_bytes),
            "bytes_saved": self.dense_bytes - self.sent_bytes,
            "compress_seconds": self.compress_seconds,
            "compress_seconds_per_step": self.compress_seconds_per_step,
            "dense_fallbacks": dict(self.dense_fallbacks),
        }

    def __str__(self) -> str:
        d = self.as_dict()
        return (f"steps {d['steps']}, ratio {d['compression_ratio']:.1f}x, "
                f"{d['bytes_sent_per_step'] / 1e6:.3f} MB sent/step "
                f"(dense {d['dense_bytes_per_step'] / 1e6:.3f}), "
                f"compress {1e3 * d['compress_seconds_per_step']:.2f} ms/step, fallbacks {d['dense_fallbacks']}")


class _Recorder:
    """Thread-safe updates of a CompressionStats plus once-only log lines.
    Decode runs in future callbacks on the process group's thread."""

    __slots__ = ("stats", "_lock", "_logged")

    def __init__(self, stats: CompressionStats | None = None):
        self.stats = stats if stats is not None else CompressionStats()
        self._lock = threading.Lock()
        self._logged: set[str] = set()

    def bucket(self, dense: int, sent: int, seconds: float = 0.0, fallback: str | None = None) -> None:
        with self._lock:
            s = self.stats
            s.buckets += 1
            s.dense_bytes += dense
            s.sent_bytes += sent
            s.compress_seconds += seconds
            if fallback:
                s.dense_fallbacks[fallback] = s.dense_fallbacks.get(fallback, 0) + 1

    def extra(self, sent: int = 0, seconds: float = 0.0, fallback: str | None = None) -> None:
        with self._lock:
            self.stats.sent_bytes += sent
            self.stats.compress_seconds += seconds
            if fallback:
                d = self.stats.dense_fallbacks
                d[fallback] = d.get(fallback, 0) + 1

    def step(self) -> None:
        with self._lock:
            self.stats.steps += 1

    def log_once(self, key: str, msg: str, *args) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(msg, *args)
