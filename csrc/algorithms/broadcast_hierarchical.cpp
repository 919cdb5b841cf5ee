// Hierarchical broadcast: one copy per node crosses the network.
//
//   1. inter-node binomial tree (phase 1) over the node heads: the root on
//      its own node, the leader (local rank 0) on every other node;
//   2. intra-node binomial tree (phase 2) from each node's head.
//
// Invariant: every node receives the data exactly once from off-node (the
// flat binomial tree can send it to one node several times when ranks are
// interleaved across hosts). The stages are not pipelined into each other: a
// node's intra stage starts when its head holds everything.
//
// Cost: the link of a node carries at most ceil(log2 n)·bytes out and bytes
// in; ceil(log2 n) + ceil(log2 g) latency steps (+ chunk pipeline depth).
#include "algorithms/select.h"

namespace distx {
namespace {

constexpr uint32_t kInterPhase = 1;
constexpr uint32_t kIntraPhase = 2;

}  // namespace

void broadcastHierarchical(CollectiveContext& ctx, void* data, size_t bytes, int root) {
  const int P = ctx.size(), me = ctx.rank();
  DISTX_CHECK(root >= 0 && root < P, InvalidArgument, "broadcast: root ", root, " is outside 0..",
              P - 1);
  if (P == 1 || bytes == 0) return;
  const Topology t = contextTopology(ctx);
  const int rootNode = t.nodeOf(root);
  std::vector<int> heads;
  for (int i = 0; i < t.numNodes(); ++i)
    heads.push_back(i == rootNode ? root : t.leader(i));
  const int myHead = heads[t.nodeOf(me)];
  if (me == myHead && t.numNodes() > 1) {
    auto inter = ctx.narrow(heads, kInterPhase);
    broadcastTree(inter, data, bytes, rootNode);
  }
  const std::vector<int>& node = t.node(t.nodeOf(me));
  if (node.size() > 1) {
    auto intra = ctx.narrow(node, kIntraPhase);
    broadcastTree(intra, data, bytes, t.localRank(myHead));
  }
}

}  // namespace distx
