// Ring all-gather over per-rank blocks, chunk-pipelined.
//
// Step t of P-1: send block (r-t) to the right, receive block (r-t-1) from the
// left directly into its final place. The block received at step t is the one
// sent at step t+1, so each chunk is forwarded as soon as it lands.
// Blocks may live anywhere (list-form all_gather passes P separate tensors)
// and may differ in size (bytes[i] for block i, e.g. Segments of an uneven
// split); every rank must pass the same sizes.
//
// Cost: P-1 latency steps; rank r sends every block but block r-1 once:
// (P-1)·blockBytes for equal blocks.
#include <algorithm>

#include "algorithms/algorithm.h"

namespace distx {

void allgatherRingBlocks(CollectiveContext& ctx, const std::vector<void*>& blocks,
                         const std::vector<size_t>& bytes) {
  const int P = ctx.size(), r = ctx.rank();
  DISTX_CHECK(static_cast<int>(blocks.size()) == P && static_cast<int>(bytes.size()) == P,
              InvalidArgument, "all_gather: ", blocks.size(), " blocks for ", P, " ranks");
  const size_t maxBytes = *std::max_element(bytes.begin(), bytes.end());
  if (P == 1 || maxBytes == 0) return;
  const size_t chunk = std::max<size_t>(1, ctx.chunkBytes);
  const size_t maxChunks = (maxBytes + chunk - 1) / chunk;
  const int left = mod(r - 1, P), right = mod(r + 1, P);
  auto chunks = [&](int b) { return (bytes[b] + chunk - 1) / chunk; };
  auto chunkLen = [&](int b, size_t c) { return std::min(chunk, bytes[b] - c * chunk); };
  auto ptr = [&](int b, size_t c) { return static_cast<uint8_t*>(blocks[b]) + c * chunk; };
  auto slot = [&](int t, size_t c) { return static_cast<uint64_t>(t) * maxChunks + c; };
  checkSlots(ctx, static_cast<uint64_t>(P - 1) * maxChunks);

  std::vector<RequestPtr> sends;
  std::vector<RequestPtr> recvs[2];
  auto postRecvs = [&](int t) {
    auto& reqs = recvs[t % 2];
    reqs.clear();
    const int b = mod(r - t - 1, P);
    for (size_t c = 0; c < chunks(b); ++c)
      reqs.push_back(ctx.recv(left, slot(t, c), ptr(b, c), chunkLen(b, c)));
  };

  postRecvs(0);
  for (size_t c = 0; c < chunks(r); ++c)
    sends.push_back(ctx.send(right, slot(0, c), ptr(r, c), chunkLen(r, c)));
  for (int t = 0; t < P - 1; ++t) {
    if (t + 1 < P - 1) postRecvs(t + 1);
    const int b = mod(r - t - 1, P);
    for (size_t c = 0; c < chunks(b); ++c) {
      ctx.wait(*recvs[t % 2][c], "recv from", left);
      if (t + 1 < P - 1)
        sends.push_back(ctx.send(right, slot(t + 1, c), ptr(b, c), chunkLen(b, c)));
    }
  }
  for (auto& req : sends)
    ctx.wait(*req, "send to", right);
}

void allgatherRing(CollectiveContext& ctx, const std::vector<void*>& blocks, size_t blockBytes) {
  allgatherRingBlocks(ctx, blocks, std::vector<size_t>(blocks.size(), blockBytes));
}

}  // namespace distx
