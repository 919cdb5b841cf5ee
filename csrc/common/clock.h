// The one clock every wait in distx is measured on, and the deadline type
// every bounded wait takes (the group's timeout turned into a time point).
#pragma once

#include <chrono>

namespace distx {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

}  // namespace distx
