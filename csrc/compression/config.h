// The group-level compression switch (Note [Compression switch],
// backend/compressor.hpp): what a process group compresses, parsed from
// DISTX_COMPRESS* or the same fields of torch_distx.Options (pg_options).
// Torch-free so GoogleTest covers parsing.
//
//   compress      "" / "none" | "fp16" | "bf16" | "topk:<ratio>"  (0 < ratio <= 1)
//   compress_ef   0 | 1        top-k error feedback (default 1; ignored by casts)
//   min_bytes     integer >= 0 smallest all-reduce that is compressed (default 65536)
//   scope         inter | all  inter: with more than one host only the inter-node
//                              stage is compressed; all: the flat path always
//   log_every     integer >= 0 an INFO line with the counters every N compressed
//                              all-reduces (0 = never)
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "compression/method.h"

namespace distx {
namespace compression {

enum class Scope : uint8_t { kInter, kAll };

struct Config {
  Method method = Method::kNone;
  double ratio = 0.0;  // top-k density
  bool errorFeedback = true;
  size_t minBytes = 65536;
  Scope scope = Scope::kInter;
  uint64_t logEvery = 0;
  std::string source;  // where `method` came from: "DISTX_COMPRESS", "pg_options.compress" or ""

  bool enabled() const { return method != Method::kNone; }
  // "topk:0.01 ef=1 min_bytes=65536 scope=inter" (or "off").
  std::string describe() const;
};

// One field as the user gave it: nullopt = not given.
struct Fields {
  std::optional<std::string> compress, errorFeedback, minBytes, scope, logEvery;
  // The torch_distx.Options field of each member; its variable and default
  // are in the settings table (Note [Settings table], common/settings.h).
  using Member = std::optional<std::string> Fields::*;
  static constexpr std::pair<const char*, Member> kByOption[] = {
      {"compress", &Fields::compress},           {"compress_ef", &Fields::errorFeedback},
      {"compress_min_bytes", &Fields::minBytes}, {"compress_scope", &Fields::scope},
      {"compress_log_every", &Fields::logEvery},
  };
};

// Merges `options` over `environment` field by field (an option beats the
// variable) and validates. A bad value is InvalidArgument naming where it came
// from ("DISTX_COMPRESS_MIN_BYTES" or "pg_options.compress_min_bytes").
Config resolve(const Fields& options, const Fields& environment);

const char* scopeName(Scope s);

}  // namespace compression
}  // namespace distx
