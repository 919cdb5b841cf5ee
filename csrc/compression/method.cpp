// Note [Codec vocabulary] (method.h).
#include "compression/method.h"

#include <cmath>
#include <cstdlib>
#include <iterator>

#include "common/enum_table.h"
#include "common/error.h"

namespace distx {
namespace compression {
namespace {

// Indexed by the wire value (method.h).
constexpr const char* kMethodNames[] = {"none", "fp16", "bf16", "topk"};
static_assert(std::size(kMethodNames) == static_cast<size_t>(kMaxMethod) + 1,
              "one name per Method");

}  // namespace

const char* methodName(Method m) {
  return enumLookup(kMethodNames, m, "?");
}

void checkCast(Method m) {
  DISTX_CHECK(isCast(m), InvalidArgument, "'", methodName(m), "' is not a cast codec");
}

Spec parseSpec(const std::string& m, const std::string& source, bool allowOff) {
  if (m.empty() || m == "none" || (allowOff && (m == "0" || m == "off"))) return {};
  if (m == "fp16") return {Method::kFp16, 0.0};
  if (m == "bf16") return {Method::kBf16, 0.0};
  if (m.rfind("topk:", 0) == 0) {
    const std::string r = m.substr(5);
    char* end = nullptr;
    const double ratio = std::strtod(r.c_str(), &end);
    DISTX_CHECK(
        !r.empty() && end && *end == '\0' && std::isfinite(ratio) && ratio > 0 && ratio <= 1,
        InvalidArgument, source, ": the top-k ratio must be a number in (0, 1]; got '", m, "'");
    return {Method::kTopK, ratio};
  }
  throw InvalidArgument(source + " must be one of fp16, bf16, topk:<ratio> or none; got '" + m +
                        "'");
}

}  // namespace compression
}  // namespace distx
