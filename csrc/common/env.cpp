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
