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

// The crossover from the cost model (latency a per step, b per byte):
//   ring   2(P-1)·a + 2(P-1)/P·n·b      recursive doubling  log2(P)·(a + n·b)
// gives n* = a·(2(P-1) - log2 P) / (b·(log2 P - 2(P-1)/P)): unbounded at P = 2
// (equal bytes, half the steps), ~120 KB at P = 4 and ~130 KB at P = 8 with
// shared-memory figures (a ~ 3 us, b ~ 0.2 ns/B). The ring also overlaps its
// reductions with transfers (chunk pipelining), so the limit is set below
// that: 64 KiB at P <= 3, 64 KiB / log2(P2) beyond. On the shared 2-core CI
// machine the two could not be told apart reliably (run-to-run noise above
// 10x); re-measure with `DISTX_ALGO=ring|recursive_doubling python -m
// torch_distx.bench allreduce` on a quiet host and move the constant.
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
  while ((2 << k) <= p) {
    ++k;
  }
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
