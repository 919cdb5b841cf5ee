// Reduce -> leaders all-reduce -> broadcast: the hierarchical all-reduce for
// small messages and for hosts with unequal rank counts (Note [Hierarchical
// all-reduce] in allreduce_hierarchical.cpp has the split-rail one).
//
//   1. intra-node binomial-tree reduce to the node's leader (local rank 0,
//      phase 1);
//   2. all-reduce among the leaders, one per node (phase 2): the inter-node
//      stage, a RailAllreduceFn (default: the flat size rules);
//   3. intra-node binomial-tree broadcast from the leader (phase 3).
//
// Invariants: the leaders end bit-identical (the inter stage guarantees it)
// and the broadcast copies their bytes, so every rank does. AVG runs as SUM
// and the leaders divide once by P before the broadcast.
//
// Cost, N bytes, nodes of g_i ranks: a node's link carries what the leaders'
// all-reduce sends (2(n-1)/n·N for a ring, N·log2 n for recursive doubling),
// once per node; intra-node each non-leader sends N and receives N.
// Latency: 2·ceil(log2 g) intra steps + the inter stage's.
#include "algorithms/select.h"
#include "common/reduce.h"

namespace distx {
namespace {

constexpr uint32_t kIntraReducePhase = 1;
constexpr uint32_t kLeadersPhase = 2;
constexpr uint32_t kIntraBroadcastPhase = 3;

}  // namespace

void allreduceLeaders(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op,
                      const RailAllreduceFn& inter) {
  const int P = ctx.size(), me = ctx.rank();
  if (P == 1 || count == 0) return;
  const Topology t = contextTopology(ctx);
  const ReduceOp stageOp = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const std::vector<int>& node = t.node(t.nodeOf(me));
  const bool leader = t.localRank(me) == 0;

  if (node.size() > 1) {
    auto intra = ctx.narrow(node, kIntraReducePhase);
    reduceTree(intra, data, count, dt, stageOp, 0);
  }
  if (leader) {
    if (t.numNodes() > 1) {
      auto leaders = ctx.narrow(t.leaders(), kLeadersPhase);
      (inter ? inter : RailAllreduceFn(defaultRailAllreduce))(leaders, data, count, dt, stageOp);
    }
    if (op == ReduceOp::kAvg) finishAvg(data, count, dt, P);
  }
  if (node.size() > 1) {
    auto intra = ctx.narrow(node, kIntraBroadcastPhase);
    broadcastTree(intra, data, count * dtypeSize(dt), 0);
  }
}

}  // namespace distx
