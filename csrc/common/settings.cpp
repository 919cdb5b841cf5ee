// Note [Settings table] (settings.h).
#include "common/settings.h"

#include <cstdlib>

#include "common/env.h"
#include "common/error.h"

namespace distx::settings {

const std::vector<Setting>& table() {
  static const std::vector<Setting> rows = {
      // Group settings: torch_distx.Options(<option>=...) beats the variable.
      {"algo", "DISTX_ALGO", "name", "",
       "force an all-reduce algorithm: ring | recursive_doubling | shm (flat) or hierarchical | "
       "leaders (split-rail or reduce-leaders-broadcast; empty = choose by message size and "
       "topology)"},
      {"chunk_bytes", "DISTX_CHUNK_BYTES", "auto | bytes", "auto",
       "pipelining chunk of the ring algorithms, in bytes (>= 4096); auto = 2 MiB among "
       "ranks of one host, 256 KiB across hosts"},
      {"piece_bytes", "DISTX_PIECE_BYTES", "auto | 0 | bytes", "auto",
       "bytes of each segment the multi-host split-rail all-reduce moves through its stages at "
       "a time (auto = an eighth of the segment, 256 KiB .. 4 MiB; 0 runs the stages one after the "
       "other); the same on every rank"},
      {"compress", "DISTX_COMPRESS", "none | fp16 | bf16 | topk:<ratio>", "",
       "compress the group's floating SUM/AVG all-reduces (docs/compression.md)"},
      {"compress_ef", "DISTX_COMPRESS_EF", "0 | 1", "1",
       "top-k error feedback: 1 keeps what was not sent for the next step"},
      {"compress_min_bytes", "DISTX_COMPRESS_MIN_BYTES", "bytes", "65536",
       "smaller all-reduces are never compressed"},
      {"compress_scope", "DISTX_COMPRESS_SCOPE", "inter | all", "inter",
       "inter: across hosts compress only the inter-node stage; all: compress the flat path"},
      {"compress_log_every", "DISTX_COMPRESS_LOG_EVERY", "count", "0",
       "N > 0: an INFO line with the compression counters every N compressed all-reduces"},
      // Process settings: read once per process.
      {nullptr, "DISTX_LOG_LEVEL", "error | warn | info | debug", "warn",
       "every line is prefixed with rank and group"},
      {nullptr, "DISTX_HOSTID", "string", "",
       "host identity for the topology (ranks with equal values share a node); default: "
       "hash of hostname + boot_id"},
      {nullptr, "DISTX_DEBUG", "0 | 1", "0",
       "1: check before each collective that all ranks called the same op/dtype/shape"},
      {nullptr, "DISTX_LIVENESS", "0 | 1", "1",
       "0: turn off dead-peer detection (the TCP liveness ring)"},
      {nullptr, "DISTX_SPIN_US", "auto | microseconds", "auto",
       "microseconds a waiting thread polls before sleeping (auto: 2000, or 50 when ranks > "
       "cores)"},
      {nullptr, "DISTX_UCX_CUDA", "auto | 0 | 1", "auto",
       "CUDA tensors across hosts: auto hands device memory to UCX where every rank's UCX "
       "supports it (else pinned host staging) | 0 always stage | 1 require CUDA-aware UCX"},
  };
  return rows;
}

const Setting& byOption(const std::string& option) {
  for (const auto& s : table()) {
    if (s.option && option == s.option) return s;
  }
  throw InvalidArgument("unknown option '" + option + "'");
}

GroupInput::GroupInput(std::map<std::string, std::string> options) : options_(std::move(options)) {
  for (const auto& [name, _] : options_)
    byOption(name);
}

std::optional<std::string> GroupInput::option(const char* option) const {
  auto it = options_.find(option);
  if (it == options_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> GroupInput::variable(const char* option) const {
  return env::raw(byOption(option).variable);
}

Given GroupInput::get(const char* option) const {
  if (auto v = this->option(option)) return {v, std::string("pg_options.") + option};
  return {variable(option), byOption(option).variable};
}

size_t parseBytes(const Given& g, size_t autoValue, size_t min, size_t max, bool allowZero) {
  if (!g.value || *g.value == "auto") return autoValue;
  const std::string& v = *g.value;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  const bool ok =
      end && *end == '\0' && n >= 0 &&
      ((allowZero && n == 0) || (static_cast<size_t>(n) >= min && static_cast<size_t>(n) <= max));
  DISTX_CHECK(ok, InvalidArgument, g.source,
              allowZero ? " must be 'auto', 0 or" : " must be 'auto' or", " an integer between ",
              min, " and 2^", __builtin_ctzll(max), "; got '", v, "'");
  return static_cast<size_t>(n);
}

}  // namespace distx::settings
