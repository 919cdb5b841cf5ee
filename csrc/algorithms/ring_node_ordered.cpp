// Node-ordered rings for all_gather_into_tensor / reduce_scatter_tensor (the
// FSDP shapes): the flat ring algorithms on a narrowed context (phase 1) whose
// rank order walks the ranks node by node (Topology::nodeOrder), so the ring
// crosses each host boundary once per direction even when torchrun placed
// ranks on hosts out of order. Blocks stay indexed by group rank: the ring's
// position i handles group rank order[i]'s block.
//
// When the ranks already are node-contiguous (the usual case) or the topology
// is unknown, this is exactly the flat ring on the given context.
//
// Cost: that of the flat ring (P-1 steps, (P-1)·block bytes per rank); the
// ring has n off-node edges instead of up to P.
#include "algorithms/select.h"

namespace distx {
namespace {

constexpr uint32_t kNodeRingPhase = 1;

bool needsReorder(const CollectiveContext& ctx) {
  return ctx.topology && ctx.topology->size() == ctx.size() && ctx.phase == 0 &&
         !ctx.topology->contiguous();
}

}  // namespace

void allgatherRingNodeOrdered(CollectiveContext& ctx, const std::vector<void*>& blocks,
                              size_t blockBytes) {
  if (!needsReorder(ctx)) {
    allgatherRing(ctx, blocks, blockBytes);
    return;
  }
  const std::vector<int> order = ctx.topology->nodeOrder();
  std::vector<void*> permuted;
  for (int r : order)
    permuted.push_back(blocks[r]);
  auto ring = ctx.narrow(order, kNodeRingPhase);
  allgatherRing(ring, permuted, blockBytes);
}

void reduceScatterRingNodeOrdered(CollectiveContext& ctx, void* data, size_t blockCount, DType dt,
                                  ReduceOp op) {
  if (!needsReorder(ctx)) {
    reduceScatterRing(ctx, data, blockCount, dt, op);
    return;
  }
  const std::vector<int> order = ctx.topology->nodeOrder();
  const size_t blockBytes = blockCount * dtypeSize(dt);
  std::vector<void*> permuted;
  for (int r : order)
    permuted.push_back(static_cast<uint8_t*>(data) + r * blockBytes);
  auto ring = ctx.narrow(order, kNodeRingPhase);
  reduceScatterRingBlocks(ring, permuted, std::vector<size_t>(order.size(), blockCount), dt, op);
}

}  // namespace distx
