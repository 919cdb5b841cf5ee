// The one table of DISTX_* environment variables. Each is read once, validated,
// and documented here and in the README; a bad value raises at process-group
// creation instead of being ignored.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace distx::env {

struct Var {
  const char* name;
  const char* defaultValue;
  const char* help;
};

// All variables distx reads, for `python -m torch_distx.info` and the README.
const std::vector<Var>& all();

// DISTX_LOG_LEVEL: error | warn | info | debug (default warn).
int logLevel();

// DISTX_CHUNK_BYTES: pipelining chunk of the ring algorithms; 0 for "auto",
// the default (Note [Chunk size]).
size_t chunkBytes();

// DISTX_PIECE_BYTES: bytes per piece of the pipelined split-rail (Note
// [Pipelined split-rail]); autoValue for "auto" (the default), 0 = off.
size_t pieceBytes(size_t autoValue);

// DISTX_ALGO: force an all-reduce algorithm by name ("" = choose by size).
std::string forcedAlgorithm();

// DISTX_DEBUG=1: check before each collective that every rank called the same
// op with the same dtypes and shapes (also on with TORCH_DISTRIBUTED_DEBUG=DETAIL).
bool debugChecks();

// DISTX_SPIN_US: microseconds a waiter spins without events before sleeping
// (-1 = auto: 2000 when ranks <= cores, else 50).
long long spinMicros();

// DISTX_LIVENESS=0 turns off the dead-peer detector (default on).
bool livenessEnabled();

// DISTX_UCX_CUDA: auto (-1, default) | 0 | 1. Whether the inter-node stage of
// a multi-host CUDA all-reduce hands device memory to UCX (Note [CUDA-aware
// rail]): -1 where every rank's UCX supports CUDA memory, 0 never (pinned host
// staging), 1 required (an error otherwise).
int ucxCuda();

// The raw value of a variable of the table, nullopt when unset or empty. The
// compression switch (DISTX_COMPRESS, DISTX_COMPRESS_EF, DISTX_COMPRESS_MIN_BYTES,
// DISTX_COMPRESS_SCOPE, DISTX_COMPRESS_LOG_EVERY) is read this way and validated,
// merged with pg_options, by compression::resolve (compression/config.h).
std::optional<std::string> raw(const char* name);

}  // namespace distx::env
