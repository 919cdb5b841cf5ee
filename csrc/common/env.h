// The process-wide DISTX_* settings (Note [Settings table], settings.h, lists
// every setting with its default and help). Each is read once per process and
// validated; a bad value raises at process-group creation instead of being
// ignored. The group settings (algorithm, chunk and piece sizes, compression)
// are resolved per group from pg_options over the environment instead.
#pragma once

#include <optional>
#include <string>

namespace distx::env {

// DISTX_LOG_LEVEL: error | warn | info | debug (default warn).
int logLevel();

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

// The raw value of a variable, nullopt when unset or empty (group settings
// are read this way, settings::GroupInput).
std::optional<std::string> raw(const char* name);

}  // namespace distx::env
