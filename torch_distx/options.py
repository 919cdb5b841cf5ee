"""``torch_distx.Options``: backend options for a distx process group.

Pass one as ``pg_options`` to ``init_process_group`` or ``new_group``::

    dist.init_process_group("distx", pg_options=torch_distx.Options(compress="topk:0.01"))

A field left ``None`` falls back to its environment variable
(``DISTX_ALGO``, ``DISTX_COMPRESS``, ...); a field that is set beats the
variable. Values are read once, when the group is created, and validated
then: a bad one raises ``ValueError`` naming ``pg_options.<field>`` (or the
variable). The fields are the group settings of the settings table
(``python -m torch_distx.info`` lists them; Note [Settings table]).
See docs/compression.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Options"]


class Options:
    """Options of a distx process group (algorithm, pipelining, compression).

    Args:
        algo: force the all-reduce algorithm (``DISTX_ALGO``): ``"ring"``,
            ``"recursive_doubling"``, ``"shm"``, ``"hierarchical"`` or
            ``"leaders"``; default: chosen by size and topology.
        chunk_bytes: pipelining chunk of the ring algorithms
            (``DISTX_CHUNK_BYTES``, ``"auto"`` or >= 4096).
        piece_bytes: piece of the pipelined multi-host split-rail
            (``DISTX_PIECE_BYTES``, ``"auto"``, 0 = stages one after the other,
            or >= 256); the same on every rank.
        compress: ``"fp16"``, ``"bf16"``, ``"topk:<ratio>"`` or ``"none"``
            (``DISTX_COMPRESS``): compress the group's floating SUM/AVG all-reduces.
        compress_ef: top-k error feedback (``DISTX_COMPRESS_EF``, default on).
        compress_min_bytes: smaller all-reduces stay exact
            (``DISTX_COMPRESS_MIN_BYTES``, default 65536).
        compress_scope: ``"inter"`` (default; with more than one host only the
            inter-node stage is compressed) or ``"all"`` (``DISTX_COMPRESS_SCOPE``).
        compress_log_every: an INFO log line with the counters every N compressed
            all-reduces (``DISTX_COMPRESS_LOG_EVERY``, default 0 = never).
    """

    __slots__ = ("algo", "chunk_bytes", "piece_bytes", "compress", "compress_ef",
                 "compress_min_bytes", "compress_scope", "compress_log_every")

    def __init__(self, compress: str | None = None, compress_ef: bool | int | None = None,
                 compress_min_bytes: int | None = None, compress_scope: str | None = None,
                 compress_log_every: int | None = None, *, algo: str | None = None,
                 chunk_bytes: int | str | None = None,
                 piece_bytes: int | str | None = None) -> None:
        self.algo = algo
        self.chunk_bytes = chunk_bytes
        self.piece_bytes = piece_bytes
        self.compress = compress
        self.compress_ef = compress_ef
        self.compress_min_bytes = compress_min_bytes
        self.compress_scope = compress_scope
        self.compress_log_every = compress_log_every

    def _as_strings(self) -> dict[str, str]:
        """The fields that are set, as the strings the C++ side parses."""
        out: dict[str, str] = {}
        for name in self.__slots__:
            value: Any = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = int(value)
            out[name] = str(value)
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__
                           if getattr(self, n) is not None)
        return f"torch_distx.Options({fields})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __getstate__(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for n in self.__slots__:
            setattr(self, n, state.get(n))
