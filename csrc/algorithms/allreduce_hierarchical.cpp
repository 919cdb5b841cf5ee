// Note [Hierarchical all-reduce]
// Split-rail all-reduce over n nodes of g ranks each (ctx.topology, uniform;
// Note [Topology]), in place over data[count]:
//
//   1. intra-node reduce-scatter (ring, phase 1): the vector is cut into g
//      Segments; local rank l ends with segment l reduced over its node;
//   2. rail all-reduce (phase 2): the ranks with local rank l on every node
//      form rail l; each rail all-reduces its segment (the g rails run at the
//      same time, each rank in exactly one). The rail stage is a function
//      argument (RailAllreduceFn): by default the flat size rules (recursive
//      doubling or ring on the n rail ranks); a compressing rail can take its
//      place without touching this file;
//   3. intra-node all-gather (ring, phase 3): every rank gets every segment.
//
// Invariants: each element is reduced on exactly one rank per stage and then
// copied, so every rank ends bit-identical (the rail function must leave its
// ranks bit-identical too: the flat ones do). The stages run with SUM for AVG,
// and the owned segment is divided once by P after the rail stage, so AVG is
// fl(sum)/P as in the flat ring (never (sum/g)/n). PREMUL_SUM arrives as SUM
// of pre-scaled inputs (the backend scales). Hosts with unequal rank counts
// have no rails: allreduce_leaders.cpp runs instead.
//
// Cost, N bytes, g | count: each rank sends intra 2(g-1)/g·N (shared memory)
// and inter 2(n-1)/n·N/g (ring rail), so a node's link carries 2(n-1)/n·N;
// the flat ring over node-contiguous ranks puts 2(P-1)/P·N on it (1.5 N
// against N at 2x2, 1.75 N against N at 2x4). Latency: 2(g-1) intra steps +
// the rail's (2(n-1) ring, log2 n recursive doubling). The three stages run
// one after the other (no overlap between a piece's rail transfer and the
// next piece's intra-node work); that overlap is the next thing to add if the
// throttled benchmark (benchmarks/allreduce_multihost.py) shows idle links.
#include "algorithms/select.h"
#include "common/reduce.h"

namespace distx {
namespace {

constexpr uint32_t kIntraReduceScatterPhase = 1;
constexpr uint32_t kRailPhase = 2;
constexpr uint32_t kIntraAllgatherPhase = 3;

}  // namespace

void defaultRailAllreduce(CollectiveContext& rail, void* data, size_t count, DType dt,
                          ReduceOp op) {
  selectFlatAllreduce(count * dtypeSize(dt), rail.size()).fn(rail, data, count, dt, op);
}

Topology contextTopology(const CollectiveContext& ctx) {
  if (!ctx.topology) return Topology::flat(ctx.size());
  DISTX_CHECK(ctx.topology->size() == ctx.size(), InvalidArgument, "topology of ",
              ctx.topology->size(), " ranks handed to a context of ", ctx.size());
  return *ctx.topology;
}

void allreduceHierarchical(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op,
                           const RailAllreduceFn& rail) {
  const int P = ctx.size(), me = ctx.rank();
  if (P == 1 || count == 0) return;
  const Topology t = contextTopology(ctx);
  if (!t.uniform()) {
    allreduceLeaders(ctx, data, count, dt, op, rail);
    return;
  }
  const int g = t.ranksPerNode(), n = t.numNodes(), l = t.localRank(me);
  const ReduceOp stageOp = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const size_t elem = dtypeSize(dt);
  const Segments seg{count, g};
  std::vector<void*> blocks(g);
  std::vector<size_t> counts(g), bytes(g);
  for (int i = 0; i < g; ++i) {
    blocks[i] = static_cast<uint8_t*>(data) + seg.offset(i) * elem;
    counts[i] = seg.size(i);
    bytes[i] = counts[i] * elem;
  }
  const std::vector<int>& node = t.node(t.nodeOf(me));

  if (g > 1) {
    auto intra = ctx.narrow(node, kIntraReduceScatterPhase);
    reduceScatterRingBlocks(intra, blocks, counts, dt, stageOp);
  }
  if (n > 1) {
    auto railCtx = ctx.narrow(t.rail(l), kRailPhase);
    (rail ? rail : RailAllreduceFn(defaultRailAllreduce))(railCtx, blocks[l], counts[l], dt,
                                                          stageOp);
  }
  if (op == ReduceOp::kAvg) finishAvg(blocks[l], counts[l], dt, P);
  if (g > 1) {
    auto intra = ctx.narrow(node, kIntraAllgatherPhase);
    allgatherRingBlocks(intra, blocks, bytes);
  }
}

}  // namespace distx
