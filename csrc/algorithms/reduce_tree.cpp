// Binomial-tree reduce to `root`, chunk-pipelined (broadcast_tree.cpp run
// backwards).
//
// Terms: v = (r - root) mod P. A rank's parent is v with its lowest set bit
// cleared; its children are v + 2^k for every 2^k below that bit (the root:
// every 2^k < P), the child v + 2^k heading a subtree of at most 2^k ranks.
// Schedule: every receive from every child is posted up front into its own
// scratch slice; then, chunk by chunk, the rank reduces each child's chunk
// into its own data (smallest subtree first: those arrive first) and forwards
// the reduced chunk to its parent at once, so the levels of the tree overlap.
// Invariant: a chunk sent to the parent is the reduction over the sender's
// whole subtree; the combination order is fixed by the tree, not by arrival.
// AVG is reduced as SUM and divided once, at the root.
//
// Cost: ceil(log2 P) latency steps (plus one per chunk of pipeline depth);
// every non-root rank sends n elements exactly once, (P-1)·n in all. Scratch:
// (children)·n elements on inner ranks.
#include <algorithm>

#include "algorithms/algorithm.h"
#include "common/reduce.h"

namespace distx {

void reduceTree(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op, int root) {
  const int P = ctx.size(), r = ctx.rank();
  DISTX_CHECK(root >= 0 && root < P, InvalidArgument, "reduce: root ", root, " is outside 0..",
              P - 1);
  if (P == 1 || count == 0) return;
  const int v = mod(r - root, P);
  const size_t elem = dtypeSize(dt), bytes = count * elem;
  const size_t chunkElems = std::max<size_t>(1, ctx.chunkBytes / elem);
  const size_t nChunks = (count + chunkElems - 1) / chunkElems;
  auto* base = static_cast<uint8_t*>(data);
  auto chunkCount = [&](size_t c) { return std::min(chunkElems, count - c * chunkElems); };

  int lowbit = 1;
  while (lowbit < P && !(v & lowbit))
    lowbit <<= 1;             // root: lowbit ends >= P
  std::vector<int> children;  // smallest subtree first
  for (int k = 1; k < lowbit && v + k < P; k <<= 1)
    children.push_back(mod(v + k + root, P));
  const int parent = v == 0 ? -1 : mod((v & ~lowbit) + root, P);

  uint8_t* scratch = ctx.scratchBytes(children.size() * bytes);
  std::vector<uint8_t> owned;
  if (!scratch && !children.empty()) {
    owned.resize(children.size() * bytes);
    scratch = owned.data();
  }
  auto slice = [&](size_t child, size_t c) {
    return scratch + child * bytes + c * chunkElems * elem;
  };

  // recvs[child * nChunks + c]
  std::vector<RequestPtr> recvs, sends;
  for (size_t i = 0; i < children.size(); ++i) {
    for (size_t c = 0; c < nChunks; ++c) {
      recvs.push_back(ctx.recv(children[i], c, slice(i, c), chunkCount(c) * elem));
    }
  }
  for (size_t c = 0; c < nChunks; ++c) {
    uint8_t* mine = base + c * chunkElems * elem;
    for (size_t i = 0; i < children.size(); ++i) {
      ctx.wait(*recvs[i * nChunks + c], "recv from", children[i]);
      reduceInto(mine, slice(i, c), chunkCount(c), dt, op);
    }
    if (parent >= 0) {
      sends.push_back(ctx.send(parent, c, mine, chunkCount(c) * elem));
    } else if (op == ReduceOp::kAvg) {
      finishAvg(mine, chunkCount(c), dt, P);
    }
  }
  for (auto& req : sends)
    ctx.wait(*req, "send to", parent);
}

}  // namespace distx
