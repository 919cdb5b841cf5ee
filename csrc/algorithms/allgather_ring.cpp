// Ring all-gather over per-rank blocks, chunk-pipelined.
//
// Step t of P-1: send block (r-t) to the right, receive block (r-t-1) from the
// left directly into its final place. The block received at step t is the one
// sent at step t+1, so each chunk is forwarded as soon as it lands.
// Blocks may live anywhere (list-form all_gather passes P separate tensors).
//
// Cost: P-1 latency steps; each rank sends (P-1)·blockBytes.
#include <algorithm>

#include "algorithms/algorithm.h"

namespace distx {

void allgatherRing(CollectiveContext& ctx, const std::vector<void*>& blocks, size_t blockBytes) {
  const int P = ctx.size(), r = ctx.rank();
  if (P == 1 || blockBytes == 0) return;
  const size_t chunk = std::max<size_t>(1, ctx.chunkBytes);
  const size_t nChunks = (blockBytes + chunk - 1) / chunk;
  const int left = mod(r - 1, P), right = mod(r + 1, P);
  auto chunkLen = [&](size_t c) { return std::min(chunk, blockBytes - c * chunk); };
  auto ptr = [&](int block, size_t c) { return static_cast<uint8_t*>(blocks[block]) + c * chunk; };
  auto slot = [&](int t, size_t c) { return static_cast<uint64_t>(t) * nChunks + c; };

  std::vector<RequestPtr> sends;
  std::vector<RequestPtr> recvs[2];
  auto postRecvs = [&](int t) {
    auto& reqs = recvs[t % 2];
    reqs.clear();
    const int block = mod(r - t - 1, P);
    for (size_t c = 0; c < nChunks; ++c)
      reqs.push_back(ctx.recv(left, slot(t, c), ptr(block, c), chunkLen(c)));
  };

  postRecvs(0);
  for (size_t c = 0; c < nChunks; ++c)
    sends.push_back(ctx.send(right, slot(0, c), ptr(r, c), chunkLen(c)));
  for (int t = 0; t < P - 1; ++t) {
    if (t + 1 < P - 1) postRecvs(t + 1);
    const int block = mod(r - t - 1, P);
    for (size_t c = 0; c < nChunks; ++c) {
      ctx.wait(*recvs[t % 2][c], "recv from", left);
      if (t + 1 < P - 1)
        sends.push_back(ctx.send(right, slot(t + 1, c), ptr(block, c), chunkLen(c)));
    }
  }
  for (auto& req : sends)
    ctx.wait(*req, "send to", right);
}

}  // namespace distx
