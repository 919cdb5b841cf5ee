// Size-range and topology rules for algorithm choice (the only place that
// picks one).
//
// All-reduce on one host, or with one rank per host (Topology::isFlat):
// recursive doubling (log2 P rounds, n·log2 P bytes sent) below a size
// threshold, the ring (2(P-1) steps, 2(P-1)/P·n bytes) above it. The
// threshold shrinks as P grows, because recursive doubling's extra traffic
// grows with log2 P while the ring's stays below 2n. Ranks that all share
// one host reduce through shared staging instead, at every size (Note
// [Shared staging]; "shm"): 2 ranks on the 2-core VM, barrier-separated,
// 8 B-128 KiB took 80-260 us against 90-590 us for recursive doubling and
// the ring; 4 ranks 0.5-1.6 ms against 0.5-2.9 ms. It falls back to the
// ring where /dev/shm cannot hold the segments.
// On several hosts with several ranks each: hierarchical (Note [Hierarchical
// all-reduce]): split-rail above leadersMaxBytes() when every host holds the
// same number of ranks, reduce -> leaders -> broadcast below it and on uneven
// hosts. Broadcast: the hierarchical one on several hosts (one copy per host
// crosses the link), the binomial tree otherwise.
// DISTX_ALGO=<name> forces one all-reduce algorithm for every size; a flat
// name (ring, recursive_doubling) also keeps broadcast flat.
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

// Split-rail against reduce->leaders->broadcast. Both put the same bytes on a
// node's link for n = 2 (2(n-1)/n·N); the leaders path has fewer intra-node
// steps (2·log2 g against 2(g-1)) and one network stream per node, split-rail
// g concurrent streams and no intra-node fan-in at the leader. Below this size
// latency rules; set from the cost model, to be re-measured on the multi-host
// testbed (tests/multihost, benchmarks/).
constexpr size_t kLeadersMaxBytes = 128 * 1024;

void hierarchicalFn(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op) {
  allreduceHierarchical(ctx, data, count, dt, op);
}
void leadersFn(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op) {
  allreduceLeaders(ctx, data, count, dt, op);
}
void hierarchicalRail(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op,
                      const RailAllreduceFn& rail) {
  allreduceHierarchical(ctx, data, count, dt, op, rail);
}
void leadersRail(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op,
                 const RailAllreduceFn& rail) {
  allreduceLeaders(ctx, data, count, dt, op, rail);
}

const AllreduceChoice kRing{"ring", allreduceRing};
const AllreduceChoice kShm{"shm", allreduceShm};
const AllreduceChoice kRecursiveDoubling{"recursive_doubling", allreduceRecursiveDoubling};
const AllreduceChoice kHierarchical{"hierarchical", hierarchicalFn, hierarchicalRail};
const AllreduceChoice kLeaders{"leaders", leadersFn, leadersRail};
const AllreduceChoice kAllreduce[] = {kRing, kRecursiveDoubling, kShm, kHierarchical, kLeaders};

int log2Floor(int p) {
  int k = 0;
  while ((2 << k) <= p) {
    ++k;
  }
  return k;
}

// `source`: where the name came from, for the error.
const AllreduceChoice* findForced(const std::string& forced,
                                  const std::string& source = "DISTX_ALGO") {
  std::string names;
  for (const auto& e : kAllreduce) {
    if (forced == e.name) return &e;
    names += names.empty() ? e.name : std::string(", ") + e.name;
  }
  throw InvalidArgument(source + "='" + forced +
                        "' is not an all-reduce algorithm; choose one of: " + names);
}

}  // namespace

void checkAlgorithmName(const std::string& name, const std::string& source) {
  if (!name.empty()) findForced(name, source);
}

size_t recursiveDoublingMaxBytes(int worldSize) {
  const int rounds = log2Floor(worldSize);
  return rounds <= 1 ? kRecursiveDoublingMaxBytes : kRecursiveDoublingMaxBytes / rounds;
}

size_t leadersMaxBytes() {
  return kLeadersMaxBytes;
}

AllreduceChoice selectFlatAllreduce(size_t bytes, int worldSize) {
  return bytes <= recursiveDoublingMaxBytes(worldSize) ? kRecursiveDoubling : kRing;
}

AllreduceChoice selectAllreduce(size_t bytes, int worldSize, const std::string& forced) {
  // No topology: nothing is known to share a host, so no shared staging.
  if (!forced.empty()) return *findForced(forced);
  return selectFlatAllreduce(bytes, worldSize);
}

AllreduceChoice selectAllreduce(size_t bytes, const Topology& topo, const std::string& forced) {
  if (!forced.empty()) return *findForced(forced);
  if (topo.numNodes() == 1 && topo.size() > 1) return kShm;
  if (topo.isFlat()) return selectFlatAllreduce(bytes, topo.size());
  if (!topo.uniform() || bytes <= kLeadersMaxBytes) return kLeaders;
  return kHierarchical;
}

BroadcastChoice selectBroadcast(size_t, const Topology& topo, const std::string& forced) {
  const bool flatForced =
      !forced.empty() && !findForced(forced)->isHierarchical();  // ring, recursive_doubling
  if (topo.isFlat() || flatForced) return {"tree", broadcastTree};
  return {"hierarchical", broadcastHierarchical};
}

std::string describeSelection(const Topology& topo, const std::string& forced) {
  if (!forced.empty()) return "all-reduce forced to '" + forced + "' by DISTX_ALGO";
  if (topo.numNodes() <= 1)
    return "one host: all-reduce through shared staging (Note [Shared staging]), other "
           "collectives flat";
  if (topo.isFlat()) return "one rank per host: flat algorithms";
  if (!topo.uniform())
    return "uneven hosts: hierarchical all-reduce as reduce -> leaders -> broadcast, "
           "hierarchical broadcast";
  return detail::concat("hierarchical: all-reduce split-rail above ", kLeadersMaxBytes,
                        " B, reduce -> leaders -> broadcast below; hierarchical broadcast");
}

}  // namespace distx
