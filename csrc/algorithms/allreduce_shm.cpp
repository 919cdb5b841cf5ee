// All-reduce among ranks of one host through shared staging (Note [Shared
// staging], shared_staging.h): reduce-scatter and all-gather in plain memory.
//
// The tensor is cut into blocks of P sub-chunks of S bytes (S = the staging's
// slotBytes); sub-chunk j of a block belongs to rank j. For block g (counted
// over the group's life, so its slot is g % 2), rank r:
//   stage:   copies its sub-chunks j != r into its own slot's in[j];
//            publishes copied = g+1;
//   reduce:  when every peer has copied g, reduces its own sub-chunk with
//            the peers' in[r] (its own values first, then the peers' in
//            rank order) into its slot's out, then into the tensor;
//            publishes reduced = g+1;
//   collect: when every peer has reduced g, copies each peer's out into the
//            tensor; publishes consumed = g+1.
// A slot is reused two blocks later: staging g waits until every peer has
// reduced g-2 (done reading in[]), reducing g until every peer has consumed
// g-2 (done reading out). Staging g+1 runs between reducing and collecting
// g, so a peer can reduce g+1 while this rank collects g.
// Each sub-chunk is reduced once, by its owner, and copied to the others:
// every rank ends with the same bytes.
// Memory traffic per rank and byte of tensor, 2 ranks: stage 1/2 read +
// 1/2 write, reduce 1 read + 1/2 write (+ the out copy, cache-hot), collect
// 1/2 + 1/2; the peers' slots are read soon after they were written, mostly
// from the shared cache. The ring through UCX pays a kernel copy (CMA) for
// both halves instead.
#include <cstring>

#include "algorithms/algorithm.h"
#include "algorithms/shared_staging.h"
#include "common/reduce.h"

namespace distx {

void allreduceShm(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op) {
  const int P = ctx.size(), r = ctx.rank();
  // Nothing to reduce, nothing sent (as the ring). Every call that announces
  // itself below has at least one block, so no rank can finish it and post
  // its next call before every peer has read this one (Note [Shared staging]).
  if (P == 1 || count == 0) return;
  // Only a whole group on one host has the staging (Note [Shared staging]);
  // the answer is the same on every rank.
  SharedStaging* st =
      ctx.members.empty() && ctx.topology && ctx.topology->numNodes() == 1 ? ctx.staging : nullptr;
  if (!st || !st->ready(ctx)) {
    allreduceRing(ctx, data, count, dt, op);
    return;
  }
  checkSameCall(ctx, *st, count, dt, op);
  const size_t elem = dtypeSize(dt);
  const size_t subElems = std::max<size_t>(1, st->slotBytes() / elem);
  const size_t blockElems = subElems * P;
  const uint64_t blocks = (count + blockElems - 1) / blockElems;
  const uint64_t base = st->blocks();
  auto* bytes = static_cast<uint8_t*>(data);

  // Sub-chunk j of block k: [first, first + n) elements of the tensor.
  auto sub = [&](uint64_t k, int j, size_t& n) {
    const size_t first = std::min(count, k * blockElems + j * subElems);
    n = std::min(subElems, count - first);
    return bytes + first * elem;
  };
  auto stage = [&](uint64_t k) {
    const uint64_t g = base + k;
    if (g >= 2) st->waitPeers(ctx, SharedStaging::kReduced, g - 1);
    for (int j = 0; j < P; ++j) {
      size_t n;
      const uint8_t* src = sub(k, j, n);
      if (j != r && n) std::memcpy(st->in(r, g, j), src, n * elem);
    }
    st->publish(SharedStaging::kCopied, g + 1);
  };
  auto reduce = [&](uint64_t k) {
    const uint64_t g = base + k;
    st->waitPeers(ctx, SharedStaging::kCopied, g + 1);
    if (g >= 2) st->waitPeers(ctx, SharedStaging::kConsumed, g - 1);
    size_t n;
    uint8_t* mine = sub(k, r, n);
    if (n) {
      uint8_t* out = st->out(r, g);
      std::memcpy(out, mine, n * elem);
      for (int j = 0; j < P; ++j) {
        if (j != r) reduceInto(out, st->in(j, g, r), n, dt, op);
      }
      if (op == ReduceOp::kAvg) finishAvg(out, n, dt, P);
      std::memcpy(mine, out, n * elem);
    }
    st->publish(SharedStaging::kReduced, g + 1);
  };
  auto collect = [&](uint64_t k) {
    const uint64_t g = base + k;
    st->waitPeers(ctx, SharedStaging::kReduced, g + 1);
    for (int j = 0; j < P; ++j) {
      size_t n;
      uint8_t* dst = sub(k, j, n);
      if (j != r && n) std::memcpy(dst, st->out(j, g), n * elem);
    }
    st->publish(SharedStaging::kConsumed, g + 1);
  };

  stage(0);
  for (uint64_t k = 0; k < blocks; ++k) {
    reduce(k);
    if (k + 1 < blocks) stage(k + 1);
    collect(k);
  }
  st->advance(blocks);
}

}  // namespace distx
