// fp16 / bf16 all-reduce: 16-bit on the wire, float32 accumulation.
//
// Schedule (P ranks, n floats split into P segments as Segments does):
//   1. encode  every rank casts its whole input once: c_q = cast(x_q).
//   2. scatter rank q sends segment p of c_q straight to rank p (pairwise
//              exchange, all P-1 messages in flight); rank p holds every
//              rank's 16-bit copy of its own segment.
//   3. reduce  rank p sums the decoded copies in float32, in rank order
//              (s = c_0 + c_1 + ... + c_{P-1}), scales once (AVG: 1/P) and
//              casts the result once: y_p = cast(s * scale).
//   4. gather  ring all-gather of the y_p (blocks padded to the largest
//              segment); every rank decodes the same bytes into data.
// So each value is rounded to 16 bits exactly twice (its own cast, the cast
// of the reduced segment), never once per hop as a ring over fp16 would, and
// every rank ends bit-identical (it decodes the same gathered payload).
//
// Overflow/NaN: the casts never clamp (cast.h). A non-finite code anywhere in
// the gathered payload is seen by every rank alike, so all ranks agree without
// a message to redo the all-reduce densely on the untouched float32 input
// (the chosen dense algorithm; counted as fallbackNonFinite). A NaN gradient
// therefore ends exactly as a dense all-reduce would leave it.
//
// Devices (Note [Device kernels]): the same schedule on any DeviceKernels:
// host memory on the CPU path, the GPU shard of the CUDA path's rail stage
// (Note [GPU compression]), where the codes cross to the transport directly
// or through host twins (Note [CUDA-aware rail]): the same messages in both
// modes. The dense redo is the caller's (CompressedRun::dense).
//
// Cost: each rank sends (n - seg(r))·2 + (P-1)·maxSeg·2 bytes, about
// 4(P-1)/P·n, half of the dense ring's 8(P-1)/P·n; latency 1 + (P-1) steps.
// Staged, plus device-host copies of the codes: n·2 out, P·maxSeg·2 in, then
// maxSeg·2 out and P·maxSeg·2 in.
#include <chrono>
#include <vector>

#include "algorithms/compressed.h"

namespace distx {
namespace {

uint64_t since(Clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

size_t roundUp16(size_t v) {
  return (v + 15) & ~size_t{15};
}

}  // namespace

void allreduceCompressedCast(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             compression::Method cast, const CompressedRun& run) {
  DISTX_CHECK(op == ReduceOp::kSum || op == ReduceOp::kAvg, InvalidArgument,
              "compressed all-reduce: op ", reduceOpName(op), " is not SUM or AVG");
  compression::checkCast(cast);
  DeviceKernels& k = run.kernels;
  CompressionCounters& counters = run.counters;
  const int P = ctx.size(), r = ctx.rank();
  counters.calls.fetch_add(1, std::memory_order_relaxed);
  counters.inputBytes.fetch_add(count * run.denseElemBytes, std::memory_order_relaxed);
  counters.denseBytes.fetch_add(denseRingBytes(count, run.denseElemBytes, P, r),
                                std::memory_order_relaxed);
  if (P == 1 || count == 0) return;

  const Segments seg{count, P};
  const size_t maxSeg = seg.size(0), mine = seg.size(r);
  // Scratch: own[count] | in[P][maxSeg] | out[P][maxSeg] (uint16), acc | tmp (float).
  const size_t codes = count + 2 * static_cast<size_t>(P) * maxSeg;
  const size_t floats = roundUp16(codes * 2);
  DeviceBuffer scratch = k.alloc(floats + 2 * maxSeg * sizeof(float));
  auto* own = scratch.as<uint16_t>();
  uint16_t* in = own + count;
  uint16_t* out = in + static_cast<size_t>(P) * maxSeg;
  auto* acc = reinterpret_cast<float*>(scratch.bytes() + floats);
  float* tmp = acc + maxSeg;
  const bool timed = k.synchronous();  // else the kernels are still running

  // 1. encode every rank's whole input once.
  auto t0 = Clock::now();
  k.encode16(cast, data, own, count, 1.0f);
  uint64_t codec = timed ? since(t0) : 0;

  // 2. scatter: segment p of every rank's copy to rank p.
  WireBuffer ownWire(k, own, count * 2), inWire(k, in, P * maxSeg * 2);
  ownWire.out();
  std::vector<RequestPtr> sends;  // waited for after the reduction, as the CPU path always did
  scatterSegments(ctx, ownWire.wire(), inWire.wire(), seg, maxSeg, 2, &sends);
  inWire.in();
  k.copy(in + r * maxSeg, own + seg.offset(r), mine * 2);
  uint64_t wire = (count - mine) * 2;

  // 3. reduce the own segment in float32, rank order; cast once.
  t0 = Clock::now();
  k.decode16(cast, in, acc, mine);
  for (int p = 1; p < P; ++p) {
    k.decode16(cast, in + p * maxSeg, tmp, mine);
    k.reduce(acc, tmp, mine, DType::kFloat32, ReduceOp::kSum);
  }
  const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(P) : 1.0f;
  k.encode16(cast, acc, out + r * maxSeg, mine, scale);
  k.zero(out + r * maxSeg + mine, (maxSeg - mine) * 2);
  if (timed) codec += since(t0);
  for (int p = 0; p < P; ++p) {
    if (p != r) ctx.wait(*sends[p], "send to", p);
  }

  // 4. all-gather the reduced segments; decode unless a code is NaN/inf.
  WireBuffer outWire(k, out, P * maxSeg * 2);
  outWire.out(r * maxSeg * 2, maxSeg * 2);
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = outWire.wire() + p * maxSeg * 2;
  allgatherRing(ctx, blocks, maxSeg * 2);
  outWire.in();
  wire += static_cast<uint64_t>(P - 1) * maxSeg * 2;

  t0 = Clock::now();
  std::vector<CodeRun> runs(P);
  for (int p = 0; p < P; ++p)
    runs[p] = {out + p * maxSeg, seg.size(p)};
  const size_t nonFinite = k.countNonFinite16(cast, runs);  // waits: every rank decides alike
  if (nonFinite == 0) {
    for (int p = 0; p < P; ++p)
      k.decode16(cast, out + p * maxSeg, data + seg.offset(p), seg.size(p));
  }
  if (timed) codec += since(t0);
  counters.codecNanos.fetch_add(codec, std::memory_order_relaxed);
  if (nonFinite > 0) {  // every rank saw the same payload: all take this branch
    counters.fallbackNonFinite.fetch_add(1, std::memory_order_relaxed);
    scratch.reset();  // may share the context's scratch with the dense algorithm
    run.dense(ctx, data, count, DType::kFloat32, op);
    wire += denseRingBytes(count, sizeof(float), P, r);
  }
  counters.wireBytes.fetch_add(wire, std::memory_order_relaxed);
}

}  // namespace distx
