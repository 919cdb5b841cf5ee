// Minimal leveled logging to stderr; nothing on stdout. Every line carries the
// caller's prefix, e.g. "[distx 1/4 pg0]".
#pragma once

#include <string>

#include "common/error.h"

namespace distx {

enum class LogLevel : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

bool logEnabled(LogLevel level);
void logLine(LogLevel level, const std::string& prefix, const std::string& msg);

}  // namespace distx

#define DISTX_LOG(level, prefix, ...)                                        \
  do {                                                                       \
    if (::distx::logEnabled(level))                                          \
      ::distx::logLine(level, prefix, ::distx::detail::concat(__VA_ARGS__)); \
  } while (0)
