// Ring all-reduce = reduce-scatter + all-gather, chunk-pipelined.
//
// Terms: the tensor is split into P segments (Segments), each segment into
// chunks of ctx.chunkBytes. Step s of 2(P-1):
//   reduce-scatter (s < P-1): send segment (r-s), receive segment (r-s-1) and
//                              reduce it into place;
//   all-gather    (t = s-P+1): send segment (r+1-t), receive segment (r-t).
// Invariant: the segment received at step s is the one sent at step s+1, so
// each received chunk is forwarded as soon as it is reduced (or landed), and
// the whole schedule is one pipeline. Receives for step s+1 are posted before
// step s is consumed; reduce-scatter receives alternate between two scratch
// halves. Before an all-gather receive overwrites segment (r-t), the
// reduce-scatter send of that segment (step t) must have completed.
// AVG is reduced as SUM and divided once, on the owned segment, at the last
// reduce-scatter step.
//
// Cost: 2(P-1) latency steps; rank r sends 2n - seg(r+1) - seg(r+2) elements,
// i.e. 2(P-1)/P·n when P divides n (bandwidth-optimal).
#include <algorithm>

#include "algorithms/algorithm.h"
#include "common/reduce.h"

namespace distx {

void allreduceRing(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op) {
  const int P = ctx.size(), r = ctx.rank();
  if (P == 1 || count == 0) return;
  const size_t elem = dtypeSize(dt);
  const Segments seg{count, P};
  const size_t chunkElems = std::max<size_t>(1, ctx.chunkBytes / elem);
  const size_t maxChunks = (seg.size(0) + chunkElems - 1) / chunkElems;
  const int steps = 2 * (P - 1);
  const int left = mod(r - 1, P), right = mod(r + 1, P);
  auto* base = static_cast<uint8_t*>(data);

  auto sendSeg = [&](int s) { return s < P - 1 ? mod(r - s, P) : mod(r + 1 - (s - P + 1), P); };
  auto recvSeg = [&](int s) { return s < P - 1 ? mod(r - s - 1, P) : mod(r - (s - P + 1), P); };
  auto chunks = [&](int segment) { return (seg.size(segment) + chunkElems - 1) / chunkElems; };
  auto chunkCount = [&](int segment, size_t c) {
    return std::min(chunkElems, seg.size(segment) - c * chunkElems);
  };
  auto slot = [&](int s, size_t c) { return static_cast<uint64_t>(s) * maxChunks + c; };
  checkSlots(ctx, static_cast<uint64_t>(steps) * maxChunks);

  const size_t segBytes = seg.size(0) * elem;
  uint8_t* scratch = ctx.scratchBytes(2 * segBytes);
  std::vector<uint8_t> owned;
  if (!scratch) {
    owned.resize(2 * segBytes);
    scratch = owned.data();
  }

  std::vector<std::vector<RequestPtr>> sends(steps);
  std::vector<RequestPtr> recvs[2];

  auto postRecvs = [&](int s) {
    if (s >= P - 1) {  // all-gather writes into the segment sent at step t
      for (auto& req : sends[s - (P - 1)])
        ctx.wait(*req, "send to", right);
    }
    const int segment = recvSeg(s);
    auto& reqs = recvs[s % 2];
    reqs.clear();
    for (size_t c = 0; c < chunks(segment); ++c) {
      const size_t off = c * chunkElems * elem;
      uint8_t* dst =
          s < P - 1 ? scratch + (s % 2) * segBytes + off : base + seg.offset(segment) * elem + off;
      reqs.push_back(ctx.recv(left, slot(s, c), dst, chunkCount(segment, c) * elem));
    }
  };
  auto sendChunk = [&](int s, size_t c) {
    const int segment = sendSeg(s);
    const size_t off = (seg.offset(segment) + c * chunkElems) * elem;
    sends[s].push_back(ctx.send(right, slot(s, c), base + off, chunkCount(segment, c) * elem));
  };

  postRecvs(0);
  for (size_t c = 0; c < chunks(sendSeg(0)); ++c)
    sendChunk(0, c);
  for (int s = 0; s < steps; ++s) {
    if (s + 1 < steps) postRecvs(s + 1);
    const int segment = recvSeg(s);
    auto& reqs = recvs[s % 2];
    for (size_t c = 0; c < reqs.size(); ++c) {
      ctx.wait(*reqs[c], "recv from", left);
      if (s < P - 1) {
        const size_t n = chunkCount(segment, c);
        uint8_t* dst = base + (seg.offset(segment) + c * chunkElems) * elem;
        reduceInto(dst, scratch + (s % 2) * segBytes + c * chunkElems * elem, n, dt, op);
        if (s == P - 2 && op == ReduceOp::kAvg) finishAvg(dst, n, dt, P);
      }
      if (s + 1 < steps) sendChunk(s + 1, c);
    }
  }
  for (auto& step : sends) {
    for (auto& req : step)
      ctx.wait(*req, "send to", right);
  }
}

}  // namespace distx
