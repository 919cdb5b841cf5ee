// Note [Hierarchical all-reduce]
// Split-rail all-reduce over n nodes of g ranks each (ctx.topology, uniform;
// Note [Topology]), in place over data[count]:
//
//   1. intra-node reduce-scatter (through the group's shared staging, which
//      on a multi-host group spans the rank's node, Note [Shared staging] and
//      shm_segment_stages.cpp; the ring, phase 1, where the node could not
//      map it): the vector is cut into g Segments; local rank l ends with
//      segment l reduced over its node;
//   2. rail all-reduce (phase 2): the ranks with local rank l on every node
//      form rail l; each rail all-reduces its segment (the g rails run at the
//      same time, each rank in exactly one). The rail stage is a function
//      argument (RailAllreduceFn): by default the flat size rules (recursive
//      doubling or ring on the n rail ranks); a compressing rail can take its
//      place without touching this file;
//   3. intra-node all-gather (shared staging, or the ring, phase 3): every
//      rank gets every segment.
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
// the rail's (2(n-1) ring, log2 n recursive doubling). Here the three stages
// run one after the other; from two pieces per segment on (ctx.railPieceBytes)
// with the default rail, Note [Pipelined split-rail] overlaps a piece's rail
// transfer with its neighbours' intra-node work. Through shared staging the intra-node
// stages cost plain memory copies instead of a kernel copy per message, which
// shortened the link's idle time: 1 Gbit/s links, 2 cores, 64 MiB at 2x4
// 718 -> 626 ms (1.56 -> 1.67x the flat ring, link 75 -> 86 % busy), at 2x2
// 615 -> 594 ms (benchmarks/allreduce_multihost.py).
#include <optional>

#include "algorithms/select.h"
#include "algorithms/shared_staging.h"
#include "common/reduce.h"

namespace distx {
namespace {

constexpr uint32_t kIntraReduceScatterPhase = 1;
constexpr uint32_t kRailPhase = 2;
constexpr uint32_t kIntraAllgatherPhase = 3;
constexpr uint32_t kShmPhase = 4;  // the staging's set-up messages

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
                           const RailAllreduceFn& rail, const RailCast* cast) {
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

  // Intra-node stages through shared staging where the node's ranks could
  // map it (Note [Shared staging]; a multi-host group's staging spans its
  // node); each node decides for itself, so one node's fallback to the rings
  // does not change the rail stage.
  SharedStaging* st = g > 1 && ctx.members.empty() ? ctx.staging : nullptr;
  std::optional<CollectiveContext> shmNode;
  if (st) {
    shmNode.emplace(ctx.narrow(node, kShmPhase));
    if (st->ready(*shmNode)) {
      checkSameCall(*shmNode, *st, count, dt, op);
    } else {
      shmNode.reset();
    }
  }
  // Note [Pipelined split-rail]: large vectors with the default rail (or a
  // cast) go piece by piece, the shared-memory stages sliced into the
  // pieces. The rule depends only on values every rank shares.
  const size_t pieceElems = (ctx.railPieceBytes == kRailPieceAuto ? railPieceFor(seg.size(0) * elem)
                                                                  : ctx.railPieceBytes) /
                            elem;
  const bool pipelined =
      n > 1 && (!rail || cast) && pieceElems > 0 && seg.size(0) >= 2 * pieceElems;
  if (shmNode) {
    if (!pipelined) shmSegmentReduceScatter(*shmNode, *st, data, count, dt, stageOp);
  } else if (g > 1) {
    auto intra = ctx.narrow(node, kIntraReduceScatterPhase);
    reduceScatterRingBlocks(intra, blocks, counts, dt, stageOp);
  }
  if (pipelined) {
    auto railCtx = ctx.narrow(t.rail(l), kRailPhase);
    allreduceSplitRailPipelined(shmNode ? &*shmNode : nullptr, st, railCtx, g, l, data, count, dt,
                                op, pieceElems, cast);
  } else {
    if (n > 1) {
      auto railCtx = ctx.narrow(t.rail(l), kRailPhase);
      (rail ? rail : RailAllreduceFn(defaultRailAllreduce))(railCtx, blocks[l], counts[l], dt,
                                                            stageOp);
    }
    if (op == ReduceOp::kAvg) finishAvg(blocks[l], counts[l], dt, P);
  }
  if (shmNode) {
    if (!pipelined) shmSegmentAllgather(*shmNode, *st, data, count, dt);
  } else if (g > 1) {
    auto intra = ctx.narrow(node, kIntraAllgatherPhase);
    allgatherRingBlocks(intra, blocks, bytes);
  }
}

}  // namespace distx
