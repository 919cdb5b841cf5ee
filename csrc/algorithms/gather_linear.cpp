// Linear gather: every rank sends its block straight to the root.
//
// Schedule: the root posts one receive per peer directly into out[peer] and
// copies its own block; a non-root rank sends one message. No rank forwards
// anything, so there is no store-and-forward copy and no scratch.
// Invariant: out[p] on the root holds exactly rank p's `bytes` (a peer that
// sends a different size fails the gather instead of leaving a gap).
//
// Cost: one latency step; the root receives (P-1)·bytes, every other rank
// sends bytes. (A tree would cut the root's message count to log2 P, but each
// byte would then cross several links; gathers here are metadata-sized or
// bandwidth-bound at the root either way.)
#include <cstring>

#include "algorithms/algorithm.h"

namespace distx {

void gatherLinear(CollectiveContext& ctx, const void* in, size_t bytes,
                  const std::vector<void*>& out, int root) {
  const int P = ctx.size(), r = ctx.rank();
  DISTX_CHECK(root >= 0 && root < P, InvalidArgument, "gather: root ", root, " is outside 0..",
              P - 1);
  if (r != root) {
    if (bytes == 0) return;
    auto req = ctx.send(root, 0, in, bytes);
    ctx.wait(*req, "send to", root);
    return;
  }
  DISTX_CHECK(static_cast<int>(out.size()) == P, InvalidArgument, "gather: the root has ",
              out.size(), " output blocks for ", P, " ranks");
  if (bytes == 0) return;
  if (out[root] != in) std::memmove(out[root], in, bytes);
  std::vector<RequestPtr> recvs(P);
  for (int p = 0; p < P; ++p) {
    if (p != root) recvs[p] = ctx.recv(p, 0, out[p], bytes);
  }
  for (int p = 0; p < P; ++p) {
    if (p == root) continue;
    ctx.wait(*recvs[p], "recv from", p);
    DISTX_CHECK(!receivedSizeMismatch(*recvs[p], bytes), InvalidArgument, "gather: rank ", p,
                " sent ", recvs[p]->receivedBytes(), " bytes, the root expected ", bytes);
  }
}

}  // namespace distx
