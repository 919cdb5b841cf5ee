// Binomial-tree reduce to `root`, chunk-pipelined (broadcast_tree.cpp run
// backwards).
//
// Terms: v = (r - root) mod P. A rank's parent is v with its lowest set bit
// cleared; its children are v + 2^k for every 2^k below that bit (the root:
// every 2^k < P), the child v + 2^k heading a subtree of at most 2^k ranks.
// Schedule: receives from each child are kept kWindow chunks ahead, each
// into one of the child's kWindow scratch slots; chunk by chunk, the rank
// reduces each child's chunk into its own data (smallest subtree first: those
// arrive first), reposts that slot for chunk c + kWindow, and forwards the
// reduced chunk to its parent at once, so the levels of the tree overlap.
// Invariant: a chunk sent to the parent is the reduction over the sender's
// whole subtree; the combination order is fixed by the tree, not by arrival.
// AVG is reduced as SUM and divided once, at the root.
//
// Cost: ceil(log2 P) latency steps (plus one per chunk of pipeline depth);
// every non-root rank sends n elements exactly once, (P-1)·n in all. Scratch:
// children · kWindow chunks on inner ranks, whatever n (it lives in the
// group's scratch, which outlives the call: a tensor-sized scratch per child
// would stay allocated for the life of the group).
#include <algorithm>

#include "algorithms/algorithm.h"
#include "common/reduce.h"

namespace distx {
namespace {
constexpr size_t kWindow = 4;  // chunks in flight per child
}  // namespace

void reduceTree(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op, int root) {
  const int P = ctx.size(), r = ctx.rank();
  DISTX_CHECK(root >= 0 && root < P, InvalidArgument, "reduce: root ", root, " is outside 0..",
              P - 1);
  if (P == 1 || count == 0) return;
  const int v = mod(r - root, P);
  const size_t elem = dtypeSize(dt);
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

  checkSlots(ctx, nChunks);
  const size_t window = std::min(kWindow, nChunks);
  const size_t slotBytes = std::min(chunkElems, count) * elem;
  const size_t scratchBytes = children.size() * window * slotBytes;
  uint8_t* scratch = ctx.scratchBytes(scratchBytes);
  std::vector<uint8_t> owned;
  if (!scratch && !children.empty()) {
    owned.resize(scratchBytes);
    scratch = owned.data();
  }
  auto slice = [&](size_t child, size_t c) {
    return scratch + (child * window + c % window) * slotBytes;
  };

  // recvs[child * window + c % window]: chunk c of that child
  std::vector<RequestPtr> recvs(children.size() * window), sends;
  auto post = [&](size_t i, size_t c) {
    recvs[i * window + c % window] = ctx.recv(children[i], c, slice(i, c), chunkCount(c) * elem);
  };
  for (size_t i = 0; i < children.size(); ++i) {
    for (size_t c = 0; c < window; ++c)
      post(i, c);
  }
  for (size_t c = 0; c < nChunks; ++c) {
    uint8_t* mine = base + c * chunkElems * elem;
    for (size_t i = 0; i < children.size(); ++i) {
      ctx.wait(*recvs[i * window + c % window], "recv from", children[i]);
      reduceInto(mine, slice(i, c), chunkCount(c), dt, op);
      if (c + window < nChunks) post(i, c + window);
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
