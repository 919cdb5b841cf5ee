// Note [CUDA-aware rail] (rail_cuda.hpp): wire buffers of the inter-node stage
// and its dense algorithm when UCX takes device pointers.
//
// railDenseDirect schedule (P rail ranks, n elements in P segments):
//   1. scatter  rank q sends segment p of x to rank p (all P-1 in flight);
//   2. reduce   rank p combines the P copies of its segment on the GPU in
//               rank order (acc = c_0 op c_1 op ... op c_{P-1});
//   3. gather   ring all-gather of the reduced segments (padded to maxSeg).
// Invariant: each segment is reduced once, by its owner, and every rank copies
// the same gathered bytes, so the rail ends bit-identical.
// Cost: each rank sends (n - seg(r)) + (P-1)·maxSeg elements, about 2(P-1)/P·n.
#include "backend/cuda/rail_cuda.hpp"

#include <c10/util/Exception.h>

#include <vector>

namespace distx {
namespace {

uint8_t* bytes(const at::Tensor& t) {
  return static_cast<uint8_t*>(t.data_ptr());
}

// acc = acc op b, elementwise on the current (internal) stream.
void combine(at::Tensor& acc, const at::Tensor& b, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      acc.add_(b);
      return;
    case ReduceOp::kProduct:
      acc.mul_(b);
      return;
    case ReduceOp::kMin:
      acc.copy_(at::minimum(acc, b));
      return;
    case ReduceOp::kMax:
      acc.copy_(at::maximum(acc, b));
      return;
    case ReduceOp::kBAnd:
      acc.bitwise_and_(b);
      return;
    case ReduceOp::kBOr:
      acc.bitwise_or_(b);
      return;
    case ReduceOp::kBXor:
      acc.bitwise_xor_(b);
      return;
    case ReduceOp::kAvg:
      break;
  }
  TORCH_CHECK(false, "distx rail all-reduce: ReduceOp.", reduceOpName(op),
              " reaches the rail as SUM plus a division");
}

}  // namespace

at::Tensor RailWire::twin(const at::Tensor& dev) const {
  if (direct_) return dev;
  return at::empty(dev.sizes(), dev.options().device(at::kCPU).pinned_memory(true));
}

void RailWire::out(const at::Tensor& dev, const at::Tensor& wire) const {
  if (direct_) {
    stream_.synchronize();  // UCX reads device memory outside the stream
    return;
  }
  wire.copy_(dev);  // device-to-host on the current (internal) stream, then waits for it
}

void RailWire::in(const at::Tensor& wire, const at::Tensor& dev) const {
  if (direct_) return;  // UCX completed the receive with the bytes in device memory
  // Asynchronous: the caching host allocator keeps `wire` until the copy is done.
  dev.copy_(wire, /*non_blocking=*/true);
}

void railScatterSegments(CollectiveContext& rail, const void* src, void* dst, const Segments& seg,
                         size_t maxSeg, size_t elem) {
  const int P = rail.size(), r = rail.rank();
  const size_t mine = seg.size(r);
  const auto* from = static_cast<const uint8_t*>(src);
  auto* to = static_cast<uint8_t*>(dst);
  std::vector<RequestPtr> recvs(P), sends(P);
  for (int s = 1; s < P; ++s) {
    const int q = mod(r - s, P);
    recvs[q] = rail.recv(q, kRailScatterSlot, to + q * maxSeg * elem, mine * elem);
  }
  for (int s = 1; s < P; ++s) {
    const int p = mod(r + s, P);
    sends[p] = rail.send(p, kRailScatterSlot, from + seg.offset(p) * elem, seg.size(p) * elem);
  }
  for (int q = 0; q < P; ++q) {
    if (q == r) continue;
    rail.wait(*recvs[q], "recv from", q);
    DISTX_CHECK(!receivedSizeMismatch(*recvs[q], mine * elem), InvalidArgument,
                "rail all-reduce: rank ", rail.groupRank(q), " sent ", recvs[q]->receivedBytes(),
                " bytes for segment ", r, ", expected ", mine * elem,
                " (the ranks disagree on the element count)");
  }
  for (int p = 0; p < P; ++p) {
    if (p != r) rail.wait(*sends[p], "send to", p);
  }
}

void railDenseDirect(CollectiveContext& rail, at::Tensor& x, ReduceOp op, const RailWire& wire) {
  TORCH_CHECK(wire.direct(), "railDenseDirect needs a direct RailWire");
  const int P = rail.size(), r = rail.rank();
  const size_t n = static_cast<size_t>(x.numel());
  if (P == 1 || n == 0) return;
  const size_t elem = x.element_size();
  const Segments seg{n, P};
  const size_t maxSeg = seg.size(0), mine = seg.size(r);
  const auto len = [](size_t v) { return static_cast<int64_t>(v); };

  at::Tensor in = at::empty({len(P * maxSeg)}, x.options());
  wire.out(x, x);
  railScatterSegments(rail, x.data_ptr(), in.data_ptr(), seg, maxSeg, elem);

  at::Tensor out = at::zeros({len(P * maxSeg)}, x.options());
  at::Tensor acc = out.narrow(0, len(r * maxSeg), len(mine));
  for (int q = 0; q < P; ++q) {
    const at::Tensor c = q == r ? x.narrow(0, len(seg.offset(r)), len(mine))
                                : in.narrow(0, len(q * maxSeg), len(mine));
    if (q == 0) {
      acc.copy_(c);
    } else {
      combine(acc, c, op);
    }
  }
  wire.out(out, out);
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = bytes(out) + p * maxSeg * elem;
  allgatherRing(rail, blocks, maxSeg * elem);
  for (int p = 0; p < P; ++p) {
    x.narrow(0, len(seg.offset(p)), len(seg.size(p)))
        .copy_(out.narrow(0, len(p * maxSeg), len(seg.size(p))));
  }
}

}  // namespace distx
