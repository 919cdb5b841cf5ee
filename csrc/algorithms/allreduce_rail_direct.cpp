// Dense rail all-reduce on device memory the transport reads itself (Note
// [CUDA-aware rail], "direct"; Note [Device kernels]): the inter-node stage
// of the device-neutral hierarchical all-reduce when every rank's transport
// takes device pointers, with the arithmetic in the device's kernels.
//
// Schedule (P rail ranks, n elements in P Segments):
//   1. scatter  rank q sends segment p of x to rank p (scatterSegments: all
//               P-1 in flight, received into slot q of a P·maxSeg buffer);
//   2. reduce   rank p combines the P copies of its segment with the kernels,
//               in rank order (acc = c_0 op c_1 op ... op c_{P-1}; AVG as SUM,
//               then one division by P);
//   3. gather   ring all-gather of the reduced segments (padded to maxSeg),
//               then every rank copies them into x.
// The kernels' writes are made readable by the transport (syncForTransport)
// before each send stage; the transport completes a receive only once the
// bytes are in device memory.
// Invariant: each segment is reduced once, by its owner, and every rank copies
// the same gathered bytes, so the rail ends bit-identical.
// Cost: each rank sends (n - seg(r)) + (P-1)·maxSeg elements, about
// 2(P-1)/P·n, as a ring does; 2 latency stages of the scatter and P-1 ring
// steps.
#include <utility>
#include <vector>

#include "algorithms/hierarchical_device.h"

namespace distx {

void scatterSegments(CollectiveContext& ctx, const void* src, void* dst, const Segments& seg,
                     size_t maxSeg, size_t elem, std::vector<RequestPtr>* inFlight) {
  const int P = ctx.size(), r = ctx.rank();
  const size_t mine = seg.size(r);
  const auto* from = static_cast<const uint8_t*>(src);
  auto* to = static_cast<uint8_t*>(dst);
  std::vector<RequestPtr> recvs(P), sends(P);
  for (int s = 1; s < P; ++s) {
    const int q = mod(r - s, P);
    recvs[q] = ctx.recv(q, kScatterSegmentsSlot, to + q * maxSeg * elem, mine * elem);
  }
  for (int s = 1; s < P; ++s) {
    const int p = mod(r + s, P);
    sends[p] = ctx.send(p, kScatterSegmentsSlot, from + seg.offset(p) * elem, seg.size(p) * elem);
  }
  for (int q = 0; q < P; ++q) {
    if (q == r) continue;
    ctx.wait(*recvs[q], "recv from", q);
    DISTX_CHECK(!receivedSizeMismatch(*recvs[q], mine * elem), InvalidArgument,
                "segment scatter: rank ", ctx.groupRank(q), " sent ", recvs[q]->receivedBytes(),
                " bytes for segment ", r, ", expected ", mine * elem,
                " (the ranks disagree on the element count)");
  }
  if (inFlight) {
    *inFlight = std::move(sends);
    return;
  }
  for (int p = 0; p < P; ++p) {
    if (p != r) ctx.wait(*sends[p], "send to", p);
  }
}

void railDenseDirect(CollectiveContext& rail, DeviceKernels& k, void* data, size_t count, DType dt,
                     ReduceOp op) {
  DISTX_CHECK(k.transportTakesDevice(), InvalidArgument,
              "railDenseDirect: the transport cannot take this device's memory");
  const int P = rail.size(), r = rail.rank();
  if (P == 1 || count == 0) return;
  const size_t elem = dtypeSize(dt);
  const Segments seg{count, P};
  const size_t maxSeg = seg.size(0), mine = seg.size(r), block = maxSeg * elem;
  auto* x = static_cast<uint8_t*>(data);

  DeviceBuffer in = k.alloc(P * block), out = k.alloc(P * block);
  k.syncForTransport();  // x was written by the stages before
  scatterSegments(rail, x, in.bytes(), seg, maxSeg, elem);

  uint8_t* acc = out.bytes() + r * block;
  const ReduceOp stageOp = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  for (int q = 0; q < P; ++q) {
    const uint8_t* c = q == r ? x + seg.offset(r) * elem : in.bytes() + q * block;
    if (q == 0) {
      k.copy(acc, c, mine * elem);
    } else {
      k.reduce(acc, c, mine, dt, stageOp);
    }
  }
  if (op == ReduceOp::kAvg) k.divide(acc, mine, dt, P);
  k.zero(acc + mine * elem, block - mine * elem);
  k.syncForTransport();
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = out.bytes() + p * block;
  allgatherRing(rail, blocks, block);
  for (int p = 0; p < P; ++p)
    k.copy(x + seg.offset(p) * elem, out.bytes() + p * block, seg.size(p) * elem);
}

}  // namespace distx
