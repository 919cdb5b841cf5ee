// Linear scatter: the root sends each rank its block directly.
//
// Schedule: the root posts every send at once (in[p] to rank p) and copies its
// own block; a non-root rank posts one receive into `out`.
// Invariant: rank p's out holds exactly in[p] of the root (a size mismatch
// fails the scatter instead of leaving part of `out` stale).
//
// Cost: one latency step; the root sends (P-1)·bytes, every other rank
// receives bytes.
#include <cstring>

#include "algorithms/algorithm.h"

namespace distx {

void scatterLinear(CollectiveContext& ctx, const std::vector<const void*>& in, void* out,
                   size_t bytes, int root) {
  const int P = ctx.size(), r = ctx.rank();
  DISTX_CHECK(root >= 0 && root < P, InvalidArgument, "scatter: root ", root, " is outside 0..",
              P - 1);
  if (r != root) {
    if (bytes == 0) return;
    auto req = ctx.recv(root, 0, out, bytes);
    ctx.wait(*req, "recv from", root);
    DISTX_CHECK(!receivedSizeMismatch(*req, bytes), InvalidArgument, "scatter: the root sent ",
                req->receivedBytes(), " bytes, rank ", r, " expected ", bytes);
    return;
  }
  DISTX_CHECK(static_cast<int>(in.size()) == P, InvalidArgument, "scatter: the root has ",
              in.size(), " input blocks for ", P, " ranks");
  if (bytes == 0) return;
  std::vector<RequestPtr> sends(P);
  for (int p = 0; p < P; ++p) {
    if (p != root) sends[p] = ctx.send(p, 0, in[p], bytes);
  }
  if (in[root] != out) std::memmove(out, in[root], bytes);
  for (int p = 0; p < P; ++p) {
    if (p != root) ctx.wait(*sends[p], "send to", p);
  }
}

}  // namespace distx
