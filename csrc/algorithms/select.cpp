// Size-range rules for algorithm choice (the only place that picks one).
//
// All-reduce: recursive doubling (log2 P rounds, n·log2 P bytes sent) below a
// size threshold, the ring (2(P-1) steps, 2(P-1)/P·n bytes) above it. The
// threshold shrinks as P grows, because recursive doubling's extra traffic
// grows with log2 P while the ring's stays below 2n.
// DISTX_ALGO=<name> forces one algorithm for every size.
#include "algorithms/select.h"

#include "common/error.h"

namespace distx {
namespace {

// Crossover points measured with `python -m torch_distx.bench allreduce`
// (UCX shared memory, float32) on 2 and 4 ranks of one host; see the table in
// the commit that set them. Below kRecursiveDoublingMaxBytes / log2(P2)
// recursive doubling wins; the ring wins from there on.
constexpr size_t kRecursiveDoublingMaxBytes = 64 * 1024;

struct Entry {
  const char* name;
  AllreduceFn fn;
};

const Entry kRing{"ring", allreduceRing};
const Entry kRecursiveDoubling{"recursive_doubling", allreduceRecursiveDoubling};
const Entry kAllreduce[] = {kRing, kRecursiveDoubling};

int log2Floor(int p) {
  int k = 0;
  while ((2 << k) <= p)
    ++k;
  return k;
}

}  // namespace

size_t recursiveDoublingMaxBytes(int worldSize) {
  const int rounds = log2Floor(worldSize);
  return rounds <= 1 ? kRecursiveDoublingMaxBytes : kRecursiveDoublingMaxBytes / rounds;
}

AllreduceChoice selectAllreduce(size_t bytes, int worldSize, const std::string& forced) {
  if (!forced.empty()) {
    std::string names;
    for (const auto& e : kAllreduce) {
      if (forced == e.name) return {e.name, e.fn};
      names += names.empty() ? e.name : std::string(", ") + e.name;
    }
    throw InvalidArgument("DISTX_ALGO='" + forced +
                          "' is not an all-reduce algorithm; choose one of: " + names);
  }
  const Entry& e = bytes <= recursiveDoublingMaxBytes(worldSize) ? kRecursiveDoubling : kRing;
  return {e.name, e.fn};
}

}  // namespace distx
