#include "common/env.h"

#include <cstdlib>
#include <string>

#include "common/error.h"

namespace distx::env {
namespace {

std::string get(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::string(def);
}

}  // namespace

const std::vector<Var>& all() {
  static const std::vector<Var> vars = {
      {"DISTX_LOG_LEVEL", "warn",
       "error | warn | info | debug; every line is prefixed with rank and group"},
      {"DISTX_CHUNK_BYTES", "auto",
       "pipelining chunk of the ring algorithms, in bytes (>= 4096); auto = 2 MiB among "
       "ranks of one host, 256 KiB across hosts"},
      {"DISTX_PIECE_BYTES", "auto",
       "bytes of each segment the multi-host split-rail all-reduce moves through its stages at "
       "a time (auto = an eighth of the segment, 256 KiB .. 4 MiB; 0 runs the stages one after the "
       "other); the same on every rank"},
      {"DISTX_ALGO", "",
       "force an algorithm: ring | recursive_doubling | shm (flat) or hierarchical | split_rail | "
       "leaders (empty = choose by message size and topology)"},
      {"DISTX_HOSTID", "",
       "host identity for the topology (ranks with equal values share a node); default: "
       "hash of hostname + boot_id"},
      {"DISTX_DEBUG", "0",
       "1: check before each collective that all ranks called the same op/dtype/shape"},
      {"DISTX_LIVENESS", "1", "0: turn off dead-peer detection (the TCP liveness ring)"},
      {"DISTX_SPIN_US", "auto",
       "microseconds a waiting thread polls before sleeping (auto: 2000, or 50 when ranks > "
       "cores)"},
      {"DISTX_COMPRESS", "",
       "fp16 | bf16 | topk:<ratio>: compress the group's floating SUM/AVG all-reduces "
       "(pg_options beat it; docs/compression.md)"},
      {"DISTX_COMPRESS_EF", "1",
       "top-k error feedback: 1 keeps what was not sent for the next step"},
      {"DISTX_COMPRESS_MIN_BYTES", "65536", "smaller all-reduces are never compressed"},
      {"DISTX_COMPRESS_SCOPE", "inter",
       "inter: across hosts compress only the inter-node stage; all: compress the flat path"},
      {"DISTX_COMPRESS_LOG_EVERY", "0",
       "N > 0: an INFO line with the compression counters every N compressed all-reduces"},
      {"DISTX_UCX_CUDA", "auto",
       "CUDA tensors across hosts: auto hands device memory to UCX where every rank's UCX "
       "supports it (else pinned host staging) | 0 always stage | 1 require CUDA-aware UCX"},
  };
  return vars;
}

int logLevel() {
  static const int level = [] {
    const std::string v = get("DISTX_LOG_LEVEL", "warn");
    if (v == "error") return 0;
    if (v == "warn" || v == "warning") return 1;
    if (v == "info") return 2;
    if (v == "debug") return 3;
    throw InvalidArgument("DISTX_LOG_LEVEL must be one of error, warn, info, debug; got '" + v +
                          "'");
  }();
  return level;
}

size_t chunkBytes() {
  const std::string v = get("DISTX_CHUNK_BYTES", "auto");
  if (v == "auto") return 0;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  DISTX_CHECK(end && *end == '\0' && n >= 4096 && n <= (1ll << 30), InvalidArgument,
              "DISTX_CHUNK_BYTES must be 'auto' or an integer between 4096 and 2^30; got '", v,
              "'");
  return static_cast<size_t>(n);
}

size_t pieceBytes(size_t autoValue) {
  const std::string v = get("DISTX_PIECE_BYTES", "auto");
  if (v == "auto") return autoValue;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  DISTX_CHECK(end && *end == '\0' && (n == 0 || (n >= 256 && n <= (1ll << 30))), InvalidArgument,
              "DISTX_PIECE_BYTES must be 'auto', 0 or an integer between 256 and 2^30; got '", v,
              "'");
  return static_cast<size_t>(n);
}

std::string forcedAlgorithm() {
  return get("DISTX_ALGO", "");
}

namespace {
bool flag(const char* name, const char* def) {
  const std::string v = get(name, def);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  throw InvalidArgument(std::string(name) + " must be 0 or 1; got '" + v + "'");
}
}  // namespace

bool debugChecks() {
  return flag("DISTX_DEBUG", "0") || get("TORCH_DISTRIBUTED_DEBUG", "") == "DETAIL";
}

long long spinMicros() {
  const std::string v = get("DISTX_SPIN_US", "auto");
  if (v == "auto") return -1;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  DISTX_CHECK(end && *end == '\0' && n >= 0 && n <= 1000000, InvalidArgument,
              "DISTX_SPIN_US must be 'auto' or an integer in 0..1000000; got '", v, "'");
  return n;
}

bool livenessEnabled() {
  return flag("DISTX_LIVENESS", "1");
}

int ucxCuda() {
  const std::string v = get("DISTX_UCX_CUDA", "auto");
  if (v == "auto") return -1;
  if (v == "0") return 0;
  if (v == "1") return 1;
  throw InvalidArgument("DISTX_UCX_CUDA must be auto, 0 or 1; got '" + v + "'");
}

std::optional<std::string> raw(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

}  // namespace distx::env
