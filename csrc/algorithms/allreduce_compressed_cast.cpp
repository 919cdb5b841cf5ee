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
// Cost: each rank sends (n - seg(r))·2 + (P-1)·maxSeg·2 bytes, about
// 4(P-1)/P·n, half of the dense ring's 8(P-1)/P·n; latency 1 + (P-1) steps.
#include <chrono>
#include <cstring>
#include <vector>

#include "algorithms/compressed.h"
#include "algorithms/select.h"
#include "common/reduce.h"
#include "compression/cast.h"

namespace distx {
namespace {

struct CastKernels {
  size_t (*encode)(const float*, uint16_t*, size_t, float, const compression::Parallel&);
  void (*decode)(const uint16_t*, float*, size_t, float, const compression::Parallel&);
  size_t (*countNonFinite)(const uint16_t*, size_t, const compression::Parallel&);
};

CastKernels kernelsFor(compression::Method m) {
  if (m == compression::Method::kFp16)
    return {compression::encodeFp16, compression::decodeFp16, compression::countNonFiniteFp16};
  DISTX_CHECK(m == compression::Method::kBf16, InvalidArgument,
              "compressed cast all-reduce: method ", compression::methodName(m), " is not a cast");
  return {compression::encodeBf16, compression::decodeBf16, compression::countNonFiniteBf16};
}

// One slot for the scatter's single message per peer, far above the slots the
// ring all-gather that follows uses (0 .. steps * chunks).
constexpr uint64_t kScatterSlot = tag::kMaxSlots - 1;

}  // namespace

void allreduceCompressedCast(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             const CompressSpec& spec, CompressionCounters& counters) {
  DISTX_CHECK(op == ReduceOp::kSum || op == ReduceOp::kAvg, InvalidArgument,
              "compressed all-reduce: op ", reduceOpName(op), " is not SUM or AVG");
  const CastKernels k = kernelsFor(spec.method);
  const compression::Parallel& par = spec.par ? *spec.par : compression::defaultParallel();
  const int P = ctx.size(), r = ctx.rank();
  counters.calls.fetch_add(1, std::memory_order_relaxed);
  counters.inputBytes.fetch_add(count * spec.denseElemBytes, std::memory_order_relaxed);
  counters.denseBytes.fetch_add(denseRingBytes(count, spec.denseElemBytes, P, r),
                                std::memory_order_relaxed);
  if (P == 1 || count == 0) return;

  using Ns = std::chrono::nanoseconds;
  auto elapsed = [](Clock::time_point t0) {
    return static_cast<uint64_t>(std::chrono::duration_cast<Ns>(Clock::now() - t0).count());
  };
  const Segments seg{count, P};
  const size_t maxSeg = seg.size(0);
  // Scratch: own[count] | in[P][maxSeg] | out[P][maxSeg] (uint16), acc | tmp (float).
  const size_t u16 = count + 2 * static_cast<size_t>(P) * maxSeg;
  const size_t bytes = u16 * 2 + 2 * maxSeg * sizeof(float) + sizeof(float);
  std::vector<uint8_t> owned;
  uint8_t* base = ctx.scratchBytes(bytes);
  if (!base) {
    owned.resize(bytes);
    base = owned.data();
  }
  auto* own = reinterpret_cast<uint16_t*>(base);
  uint16_t* in = own + count;
  uint16_t* out = in + static_cast<size_t>(P) * maxSeg;
  // float32 area, aligned to 4 bytes.
  auto* acc = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(out + P * maxSeg) + 3) & ~3ull);
  float* tmp = acc + maxSeg;

  auto t0 = Clock::now();
  k.encode(data, own, count, 1.0f, par);
  uint64_t codec = elapsed(t0);

  // 2. scatter: segment p of every rank's copy to rank p.
  const size_t mine = seg.size(r);
  std::vector<RequestPtr> recvs(P), sends(P);
  for (int s = 1; s < P; ++s) {
    const int from = mod(r - s, P);
    recvs[from] = ctx.recv(from, kScatterSlot, in + from * maxSeg, mine * 2);
  }
  for (int s = 1; s < P; ++s) {
    const int to = mod(r + s, P);
    sends[to] = ctx.send(to, kScatterSlot, own + seg.offset(to), seg.size(to) * 2);
  }
  std::memcpy(in + r * maxSeg, own + seg.offset(r), mine * 2);
  uint64_t wire = (count - mine) * 2;
  for (int p = 0; p < P; ++p) {
    if (p == r) continue;
    ctx.wait(*recvs[p], "recv from", p);
    DISTX_CHECK(!receivedSizeMismatch(*recvs[p], mine * 2), InvalidArgument,
                "compressed all-reduce: rank ", p, " sent ", recvs[p]->receivedBytes(),
                " bytes for segment ", r, ", expected ", mine * 2,
                " (the ranks disagree on the element count)");
  }

  // 3. reduce the own segment in float32, rank order; cast once.
  t0 = Clock::now();
  k.decode(in, acc, mine, 1.0f, par);
  for (int p = 1; p < P; ++p) {
    k.decode(in + p * maxSeg, tmp, mine, 1.0f, par);
    reduceInto(acc, tmp, mine, DType::kFloat32, ReduceOp::kSum);
  }
  const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(P) : 1.0f;
  k.encode(acc, out + r * maxSeg, mine, scale, par);
  if (mine < maxSeg) std::memset(out + r * maxSeg + mine, 0, (maxSeg - mine) * 2);
  codec += elapsed(t0);
  for (int p = 0; p < P; ++p) {
    if (p != r) ctx.wait(*sends[p], "send to", p);
  }

  // 4. all-gather the reduced segments.
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = out + p * maxSeg;
  allgatherRing(ctx, blocks, maxSeg * 2);
  wire += static_cast<uint64_t>(P - 1) * maxSeg * 2;

  t0 = Clock::now();
  size_t nonFinite = 0;
  for (int p = 0; p < P; ++p)
    nonFinite += k.countNonFinite(out + p * maxSeg, seg.size(p), par);
  if (nonFinite == 0) {
    for (int p = 0; p < P; ++p)
      k.decode(out + p * maxSeg, data + seg.offset(p), seg.size(p), 1.0f, par);
  }
  codec += elapsed(t0);
  counters.codecNanos.fetch_add(codec, std::memory_order_relaxed);
  if (nonFinite > 0) {  // every rank saw the same payload: all take this branch
    counters.fallbackNonFinite.fetch_add(1, std::memory_order_relaxed);
    const auto dense = selectAllreduce(count * sizeof(float), P, "");
    dense.fn(ctx, data, count, DType::kFloat32, op);
    wire += denseRingBytes(count, sizeof(float), P, r);
  }
  counters.wireBytes.fetch_add(wire, std::memory_order_relaxed);
}

}  // namespace distx
