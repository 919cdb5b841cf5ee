// Note [Codec vocabulary] (method.h).
#include "compression/method.h"

#include <cmath>
#include <cstdlib>

#include "common/error.h"

namespace distx {
namespace compression {

const char* methodName(Method m) {
  switch (m) {
    case Method::kNone:
      return "none";
    case Method::kFp16:
      return "fp16";
    case Method::kBf16:
      return "bf16";
    case Method::kTopK:
      return "topk";
  }
  return "?";
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
