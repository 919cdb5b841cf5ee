#include "common/logging.h"

#include <cstdio>
#include <mutex>

#include "common/env.h"

namespace distx {

bool logEnabled(LogLevel level) {
  return static_cast<int>(level) <= env::logLevel();
}

void logLine(LogLevel level, const std::string& prefix, const std::string& msg) {
  static std::mutex mu;
  static const char* names[] = {"E", "W", "I", "D"};
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%s %s %s\n", names[static_cast<int>(level)], prefix.c_str(), msg.c_str());
}

}  // namespace distx
