// Binomial-tree broadcast, chunk-pipelined.
//
// With v = (r - root) mod P, a rank's parent is v with its lowest set bit
// cleared, and its children are v + 2^k for every 2^k below that bit (the root:
// every 2^k < P). Each chunk is forwarded to the children as soon as it
// arrives, farthest child first, so deep subtrees start early.
//
// Cost: ceil(log2 P) latency steps; an inner rank sends (children)·bytes.
#include <algorithm>

#include "algorithms/algorithm.h"

namespace distx {

void broadcastTree(CollectiveContext& ctx, void* data, size_t bytes, int root) {
  const int P = ctx.size(), r = ctx.rank();
  if (P == 1 || bytes == 0) return;
  const int v = mod(r - root, P);
  const size_t chunk = std::max<size_t>(1, ctx.chunkBytes);
  const size_t nChunks = (bytes + chunk - 1) / chunk;
  auto* base = static_cast<uint8_t*>(data);
  auto chunkLen = [&](size_t c) { return std::min(chunk, bytes - c * chunk); };
  checkSlots(ctx, nChunks);

  int lowbit = 1;
  while (lowbit < P && !(v & lowbit))
    lowbit <<= 1;  // root: lowbit ends >= P
  std::vector<int> children;
  for (int k = lowbit >> 1; k >= 1; k >>= 1) {
    if (v + k < P) children.push_back(mod(v + k + root, P));
  }
  const int parent = v == 0 ? -1 : mod((v & ~lowbit) + root, P);

  std::vector<RequestPtr> recvs, sends;
  if (parent >= 0) {
    for (size_t c = 0; c < nChunks; ++c)
      recvs.push_back(ctx.recv(parent, c, base + c * chunk, chunkLen(c)));
  }
  for (size_t c = 0; c < nChunks; ++c) {
    if (parent >= 0) ctx.wait(*recvs[c], "recv from", parent);
    for (int child : children)
      sends.push_back(ctx.send(child, c, base + c * chunk, chunkLen(c)));
  }
  for (size_t i = 0; i < sends.size(); ++i)
    ctx.wait(*sends[i], "send to", children[i % children.size()]);
}

}  // namespace distx
