// Size-range rules for algorithm choice. Today every size uses the ring; the
// small-message algorithm (issue: latency-optimal all-reduce) plugs in here.
#include "algorithms/select.h"

#include "common/error.h"

namespace distx {
namespace {

struct Entry {
  const char* name;
  AllreduceFn fn;
};

const Entry kAllreduce[] = {
    {"ring", allreduceRing},
};

}  // namespace

AllreduceChoice selectAllreduce(size_t /*bytes*/, int /*worldSize*/, const std::string& forced) {
  if (!forced.empty()) {
    std::string names;
    for (const auto& e : kAllreduce) {
      if (forced == e.name) return {e.name, e.fn};
      names += names.empty() ? e.name : std::string(", ") + e.name;
    }
    throw InvalidArgument("DISTX_ALGO='" + forced + "' is not an all-reduce algorithm; choose one of: " + names);
  }
  return {kAllreduce[0].name, kAllreduce[0].fn};
}

}  // namespace distx
