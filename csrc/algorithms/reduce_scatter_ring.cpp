// Ring reduce-scatter over P equal blocks, chunk-pipelined.
//
// data holds P blocks of blockCount elements; afterwards block r of rank r is
// the reduction of every rank's block r (other blocks hold partial sums).
// Step s of P-1: send block (r-1-s) to the right, receive block (r-2-s) from
// the left into scratch and reduce it into place; the block received at step
// s is the one sent at step s+1, so each chunk is forwarded once reduced.
// The last step receives block r, which is then complete (AVG divides it).
// Receives alternate between two scratch halves, posted one step ahead.
//
// Cost: P-1 latency steps; each rank sends (P-1)·blockCount elements.
#include <algorithm>

#include "algorithms/algorithm.h"
#include "common/reduce.h"

namespace distx {

void reduceScatterRing(CollectiveContext& ctx, void* data, size_t blockCount, DType dt,
                       ReduceOp op) {
  const int P = ctx.size(), r = ctx.rank();
  if (P == 1) {
    if (op == ReduceOp::kAvg) finishAvg(data, blockCount, dt, 1);
    return;
  }
  if (blockCount == 0) return;
  const size_t elem = dtypeSize(dt), blockBytes = blockCount * elem;
  const size_t chunkElems = std::max<size_t>(1, ctx.chunkBytes / elem);
  const size_t nChunks = (blockCount + chunkElems - 1) / chunkElems;
  const int left = mod(r - 1, P), right = mod(r + 1, P);
  auto* base = static_cast<uint8_t*>(data);
  auto chunkCount = [&](size_t c) { return std::min(chunkElems, blockCount - c * chunkElems); };
  auto at = [&](int block, size_t c) { return base + block * blockBytes + c * chunkElems * elem; };
  auto slot = [&](int s, size_t c) { return static_cast<uint64_t>(s) * nChunks + c; };

  uint8_t* scratch = ctx.scratchBytes(2 * blockBytes);
  std::vector<uint8_t> owned;
  if (!scratch) {
    owned.resize(2 * blockBytes);
    scratch = owned.data();
  }
  std::vector<RequestPtr> sends, recvs[2];
  auto postRecvs = [&](int s) {
    auto& reqs = recvs[s % 2];
    reqs.clear();
    for (size_t c = 0; c < nChunks; ++c) {
      reqs.push_back(ctx.recv(left, slot(s, c),
                              scratch + (s % 2) * blockBytes + c * chunkElems * elem,
                              chunkCount(c) * elem));
    }
  };

  postRecvs(0);
  for (size_t c = 0; c < nChunks; ++c)
    sends.push_back(ctx.send(right, slot(0, c), at(mod(r - 1, P), c), chunkCount(c) * elem));
  for (int s = 0; s < P - 1; ++s) {
    if (s + 1 < P - 1) postRecvs(s + 1);
    const int block = mod(r - 2 - s, P);
    for (size_t c = 0; c < nChunks; ++c) {
      ctx.wait(*recvs[s % 2][c], "recv from", left);
      reduceInto(at(block, c), scratch + (s % 2) * blockBytes + c * chunkElems * elem,
                 chunkCount(c), dt, op);
      if (s + 1 < P - 1) {
        sends.push_back(ctx.send(right, slot(s + 1, c), at(block, c), chunkCount(c) * elem));
      } else if (op == ReduceOp::kAvg) {
        finishAvg(at(block, c), chunkCount(c), dt, P);
      }
    }
  }
  for (auto& req : sends)
    ctx.wait(*req, "send to", right);
}

}  // namespace distx
