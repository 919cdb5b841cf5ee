// Top-k all-reduce with error feedback: (index, value) pairs by all-gather.
//
// Schedule (P ranks, n floats, k = topkCount(n, ratio)):
//   1. encode  a = x (+ residual); the k largest |a| become k (int32 index,
//              float32 value) pairs in this rank's block; with error feedback
//              the residual keeps the rest of a (topk.h).
//   2. gather  ring all-gather of the P blocks (8k bytes each).
//   3. decode  every rank zero-fills data and adds all P·k pairs in rank
//              order (times 1/P for AVG): the same bytes in the same order,
//              so every rank ends bit-identical.
// Dense fallback: the all-gather sends (P-1)·8k bytes against the ring's
// ~8(P-1)/P·n, so sparse pays only while k·P < n (density × ranks < 1). Past
// that the dense algorithm runs on x + residual (which flushes the residual)
// and fallbackDensity counts it. Residual state belongs to the caller (one per
// group and bucket); a residual of another size is reset to zeros.
//
// Cost: P-1 latency steps, (P-1)·8k bytes sent per rank.
#include <chrono>
#include <vector>

#include "algorithms/compressed.h"
#include "algorithms/select.h"
#include "common/reduce.h"
#include "compression/topk.h"

namespace distx {

void allreduceCompressedTopK(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             const CompressSpec& spec, compression::TensorState* state,
                             CompressionCounters& counters) {
  DISTX_CHECK(op == ReduceOp::kSum || op == ReduceOp::kAvg, InvalidArgument,
              "compressed all-reduce: op ", reduceOpName(op), " is not SUM or AVG");
  const compression::Parallel& par = spec.par ? *spec.par : compression::defaultParallel();
  const int P = ctx.size(), r = ctx.rank();
  counters.calls.fetch_add(1, std::memory_order_relaxed);
  counters.inputBytes.fetch_add(count * spec.denseElemBytes, std::memory_order_relaxed);
  counters.denseBytes.fetch_add(denseRingBytes(count, spec.denseElemBytes, P, r),
                                std::memory_order_relaxed);
  if (P == 1 || count == 0) return;
  const size_t k = compression::topkCount(count, spec.ratio);
  float* residual = nullptr;
  if (spec.errorFeedback && state) {
    if (state->residual.size() != count) state->residual.assign(count, 0.0f);
    residual = state->residual.data();
  }

  if (k * static_cast<size_t>(P) >= count) {
    counters.fallbackDensity.fetch_add(1, std::memory_order_relaxed);
    if (residual) {  // send what was held back, then start afresh
      reduceInto(data, residual, count, DType::kFloat32, ReduceOp::kSum);
      state->residual.assign(count, 0.0f);
    }
    const auto dense = selectAllreduce(count * sizeof(float), P, "");
    dense.fn(ctx, data, count, DType::kFloat32, op);
    counters.wireBytes.fetch_add(denseRingBytes(count, sizeof(float), P, r),
                                 std::memory_order_relaxed);
    return;
  }

  const size_t block = compression::topkPayloadBytes(k);
  std::vector<uint8_t> owned;
  uint8_t* base = ctx.scratchBytes(block * P);
  if (!base) {
    owned.resize(block * P);
    base = owned.data();
  }
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = base + p * block;

  using Ns = std::chrono::nanoseconds;
  auto t0 = Clock::now();
  compression::encodeTopK(data, residual, count, k, 1.0f, static_cast<int32_t*>(blocks[r]), par);
  uint64_t codec = std::chrono::duration_cast<Ns>(Clock::now() - t0).count();

  allgatherRing(ctx, blocks, block);

  t0 = Clock::now();
  const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(P) : 1.0f;
  compression::decodeTopK(reinterpret_cast<const int32_t*>(base), k * P, count, scale, data,
                          /*accumulate=*/false, par);
  codec += std::chrono::duration_cast<Ns>(Clock::now() - t0).count();
  counters.codecNanos.fetch_add(codec, std::memory_order_relaxed);
  counters.wireBytes.fetch_add(static_cast<uint64_t>(P - 1) * block, std::memory_order_relaxed);
}

}  // namespace distx
