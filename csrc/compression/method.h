// Note [Codec vocabulary]
// One list of the compression methods distx knows, used everywhere a method is
// named or sent: the group switch (config.h), the torch ops and DDP hooks
// (python/ops_compression.cpp), the parameter server's pushes (ps/wire.h's
// `aux` field carries the value) and Python (torch_distx gets the names and
// the parser from _C). The values are wire values: never renumber them.
//
// A spec is how a user writes one: "none" (or empty), "fp16", "bf16" or
// "topk:<ratio>" with 0 < ratio <= 1. parseSpec is the only parser; its
// errors name where the text came from ("DISTX_COMPRESS",
// "pg_options.compress", "ps: compression").
#pragma once

#include <cstdint>
#include <string>

namespace distx {
namespace compression {

enum class Method : uint8_t { kNone = 0, kFp16 = 1, kBf16 = 2, kTopK = 3 };
constexpr Method kMaxMethod = Method::kTopK;
static_assert(static_cast<int>(Method::kFp16) == 1 && static_cast<int>(Method::kBf16) == 2 &&
                  static_cast<int>(Method::kTopK) == 3,
              "wire values of the PS push codec (ps/wire.h): never renumber");

// "none", "fp16", "bf16", "topk".
const char* methodName(Method m);
// fp16 or bf16: element-wise casts whose payloads are summed.
inline bool isCast(Method m) {
  return m == Method::kFp16 || m == Method::kBf16;
}
// InvalidArgument ("'<name>' is not a cast codec") unless isCast(m): the
// check of castKernels (cast.h and its CUDA twin).
void checkCast(Method m);

struct Spec {
  Method method = Method::kNone;
  double ratio = 0.0;  // top-k density; 0 for the others
};

// Parses "none" | "" | "fp16" | "bf16" | "topk:<ratio>"; InvalidArgument naming
// `source` otherwise. `allowOff` also takes "0" and "off" for none (the
// switch's DISTX_COMPRESS accepts them).
Spec parseSpec(const std::string& text, const std::string& source, bool allowOff = true);

}  // namespace compression
}  // namespace distx
