// Ring reduce-scatter over P blocks, chunk-pipelined.
//
// Block i (counts[i] elements at blocks[i]; sizes may differ, e.g. Segments of
// an uneven split) ends reduced on rank i: afterwards block r of rank r is the
// reduction of every rank's block r (other blocks hold partial sums).
// Step s of P-1: send block (r-1-s) to the right, receive block (r-2-s) from
// the left into scratch and reduce it into place; the block received at step
// s is the one sent at step s+1, so each chunk is forwarded once reduced.
// The last step receives block r, which is then complete (AVG divides it).
// Receives alternate between two scratch halves (each the largest block),
// posted one step ahead.
//
// Cost: P-1 latency steps; rank r sends every block but block r once:
// (P-1)·blockCount elements for equal blocks.
#include <algorithm>

#include "algorithms/algorithm.h"
#include "common/reduce.h"

namespace distx {

void reduceScatterRingBlocks(CollectiveContext& ctx, const std::vector<void*>& blocks,
                             const std::vector<size_t>& counts, DType dt, ReduceOp op) {
  const int P = ctx.size(), r = ctx.rank();
  DISTX_CHECK(static_cast<int>(blocks.size()) == P && static_cast<int>(counts.size()) == P,
              InvalidArgument, "reduce_scatter: ", blocks.size(), " blocks for ", P, " ranks");
  if (P == 1) {
    if (op == ReduceOp::kAvg) finishAvg(blocks[0], counts[0], dt, 1);
    return;
  }
  const size_t maxCount = *std::max_element(counts.begin(), counts.end());
  if (maxCount == 0) return;
  const size_t elem = dtypeSize(dt), maxBytes = maxCount * elem;
  const size_t chunkElems = std::max<size_t>(1, ctx.chunkBytes / elem);
  const size_t maxChunks = (maxCount + chunkElems - 1) / chunkElems;
  const int left = mod(r - 1, P), right = mod(r + 1, P);
  auto chunks = [&](int b) { return (counts[b] + chunkElems - 1) / chunkElems; };
  auto chunkCount = [&](int b, size_t c) {
    return std::min(chunkElems, counts[b] - c * chunkElems);
  };
  auto at = [&](int b, size_t c) {
    return static_cast<uint8_t*>(blocks[b]) + c * chunkElems * elem;
  };
  auto slot = [&](int s, size_t c) { return static_cast<uint64_t>(s) * maxChunks + c; };
  checkSlots(ctx, static_cast<uint64_t>(P - 1) * maxChunks);

  uint8_t* scratch = ctx.scratchBytes(2 * maxBytes);
  std::vector<uint8_t> owned;
  if (!scratch) {
    owned.resize(2 * maxBytes);
    scratch = owned.data();
  }
  std::vector<RequestPtr> sends, recvs[2];
  auto postRecvs = [&](int s) {
    auto& reqs = recvs[s % 2];
    reqs.clear();
    const int b = mod(r - 2 - s, P);
    for (size_t c = 0; c < chunks(b); ++c) {
      reqs.push_back(ctx.recv(left, slot(s, c),
                              scratch + (s % 2) * maxBytes + c * chunkElems * elem,
                              chunkCount(b, c) * elem));
    }
  };

  postRecvs(0);
  for (size_t c = 0; c < chunks(mod(r - 1, P)); ++c)
    sends.push_back(
        ctx.send(right, slot(0, c), at(mod(r - 1, P), c), chunkCount(mod(r - 1, P), c) * elem));
  for (int s = 0; s < P - 1; ++s) {
    if (s + 1 < P - 1) postRecvs(s + 1);
    const int b = mod(r - 2 - s, P);
    for (size_t c = 0; c < chunks(b); ++c) {
      ctx.wait(*recvs[s % 2][c], "recv from", left);
      reduceInto(at(b, c), scratch + (s % 2) * maxBytes + c * chunkElems * elem, chunkCount(b, c),
                 dt, op);
      if (s + 1 < P - 1) {
        sends.push_back(ctx.send(right, slot(s + 1, c), at(b, c), chunkCount(b, c) * elem));
      } else if (op == ReduceOp::kAvg) {
        finishAvg(at(b, c), chunkCount(b, c), dt, P);
      }
    }
  }
  for (auto& req : sends)
    ctx.wait(*req, "send to", right);
}

void reduceScatterRing(CollectiveContext& ctx, void* data, size_t blockCount, DType dt,
                       ReduceOp op) {
  const int P = ctx.size();
  const size_t blockBytes = blockCount * dtypeSize(dt);
  std::vector<void*> blocks(P);
  for (int i = 0; i < P; ++i)
    blocks[i] = static_cast<uint8_t*>(data) + i * blockBytes;
  reduceScatterRingBlocks(ctx, blocks, std::vector<size_t>(P, blockCount), dt, op);
}

}  // namespace distx
