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
// Devices (Note [Device kernels]): the same schedule on any DeviceKernels:
// host memory on the CPU path, the GPU shard of the CUDA path's rail stage
// with the residual on the device (Note [GPU compression]); the pairs cross
// to the transport directly or through a host twin (Note [CUDA-aware rail]),
// the same messages in both modes. The dense fallback is the caller's
// (CompressedRun::dense).
//
// Cost: P-1 latency steps, (P-1)·8k bytes sent per rank (staged, plus 8k
// bytes out and P·8k in across the device-host link).
#include <chrono>
#include <vector>

#include "algorithms/compressed.h"
#include "compression/topk.h"

namespace distx {
namespace {

uint64_t since(Clock::time_point t0) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

}  // namespace

void allreduceCompressedTopK(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             double ratio, const CompressedRun& run) {
  DISTX_CHECK(op == ReduceOp::kSum || op == ReduceOp::kAvg, InvalidArgument,
              "compressed all-reduce: op ", reduceOpName(op), " is not SUM or AVG");
  DeviceKernels& kn = run.kernels;
  CompressionCounters& counters = run.counters;
  const int P = ctx.size(), r = ctx.rank();
  counters.calls.fetch_add(1, std::memory_order_relaxed);
  counters.inputBytes.fetch_add(count * run.denseElemBytes, std::memory_order_relaxed);
  counters.denseBytes.fetch_add(denseRingBytes(count, run.denseElemBytes, P, r),
                                std::memory_order_relaxed);
  if (P == 1 || count == 0) return;
  const size_t k = compression::topkCount(count, ratio);
  float* residual = run.residual ? run.residual(count) : nullptr;

  if (k * static_cast<size_t>(P) >= count) {
    counters.fallbackDensity.fetch_add(1, std::memory_order_relaxed);
    if (residual) {  // send what was held back, then start afresh
      kn.reduce(data, residual, count, DType::kFloat32, ReduceOp::kSum);
      kn.zero(residual, count * sizeof(float));
    }
    run.dense(ctx, data, count, DType::kFloat32, op);
    counters.wireBytes.fetch_add(denseRingBytes(count, sizeof(float), P, r),
                                 std::memory_order_relaxed);
    return;
  }

  const size_t block = compression::topkPayloadBytes(k);
  DeviceBuffer pairs = kn.alloc(block * P);
  const bool timed = kn.synchronous();  // else the kernels are still running
  auto t0 = Clock::now();
  kn.encodeTopK(data, residual, count, k, reinterpret_cast<int32_t*>(pairs.bytes() + r * block));
  uint64_t codec = timed ? since(t0) : 0;

  WireBuffer pairsWire(kn, pairs.bytes(), block * P);
  pairsWire.out(r * block, block);
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = pairsWire.wire() + p * block;
  allgatherRing(ctx, blocks, block);
  pairsWire.in();

  t0 = Clock::now();
  const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(P) : 1.0f;
  kn.decodeTopK(pairs.as<int32_t>(), P, k, count, scale, data);
  if (timed) codec += since(t0);
  counters.codecNanos.fetch_add(codec, std::memory_order_relaxed);
  counters.wireBytes.fetch_add(static_cast<uint64_t>(P - 1) * block, std::memory_order_relaxed);
}

}  // namespace distx
