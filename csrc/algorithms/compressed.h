// Compressed all-reduces (docs/design.md, "Compression"): the group option's
// algorithms, over float32 data, with SUM or AVG. They reuse the codecs of
// csrc/compression and the flat algorithms of this folder, and run on any
// CollectiveContext: the whole group (flat path) or a narrowed one (the
// inter-node rail stage of the hierarchical all-reduce).
//
// Every rank ends with bit-identical results: each sum is computed once, in
// rank order, from payloads every rank holds the same copy of.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "algorithms/algorithm.h"
#include "algorithms/device_kernels.h"
#include "compression/codec.h"
#include "compression/config.h"
#include "compression/parallel.h"

namespace distx {

// What compressed all-reduces did on one process group (this rank's view).
// Written by the worker thread, read from Python at any time.
struct CompressionCounters {
  std::atomic<uint64_t> calls{0};              // compressed all-reduces run (fallbacks included)
  std::atomic<uint64_t> exactCalls{0};         // all-reduces the gate left exact (backend)
  std::atomic<uint64_t> denseBytes{0};         // bytes a dense ring would have sent for them
  std::atomic<uint64_t> wireBytes{0};          // bytes actually sent for them
  std::atomic<uint64_t> inputBytes{0};         // tensor bytes handed to them
  std::atomic<uint64_t> fallbackDensity{0};    // top-k: k * ranks >= n, sent dense
  std::atomic<uint64_t> fallbackNonFinite{0};  // casts: overflow/NaN/inf, redone dense
  std::atomic<uint64_t> codecNanos{0};         // time in encode + decode
};

struct CompressSpec {
  compression::Method method = compression::Method::kNone;
  double ratio = 0.01;
  bool errorFeedback = true;
  size_t denseElemBytes = 4;  // element size of the caller's tensor (dense byte counts)
  const compression::Parallel* par = nullptr;  // codec threads (default: defaultParallel())
};

// Bytes rank `r` sends in a dense ring all-reduce of `count` elements of `elem` bytes.
uint64_t denseRingBytes(size_t count, size_t elem, int P, int r);

// Note [Device kernels]: the compressed all-reduces are written once, against
// DeviceKernels, and serve host memory (CpuKernels, the functions below that
// take no kernels) and the CUDA path's rail stage (Note [GPU compression]).
// residual(count): this rank's error-feedback residual of `count` floats in
// the kernels' memory, zeros when new or of another size; empty = no feedback.
using ResidualFn = std::function<float*(size_t count)>;
struct CompressedRun {
  DeviceKernels& kernels;
  CompressionCounters& counters;
  // The dense all-reduce the fallbacks run on the same context (float32, the
  // caller's op): the flat rules on the CPU, the dense rail on a device.
  RailAllreduceFn dense;
  size_t denseElemBytes = 4;  // element size of the caller's tensor (dense byte counts)
  ResidualFn residual;        // top-k only
};

// allreduce_compressed_cast.cpp: fp16/bf16 on the wire, float32 accumulation.
// In place over data[count] (kernels' memory); `cast` is kFp16 or kBf16
// (InvalidArgument otherwise); op is kSum or kAvg (divides by ctx.size()).
void allreduceCompressedCast(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             compression::Method cast, const CompressedRun& run);

// allreduce_compressed_topk.cpp: (index, value) all-gather, rank-order sum,
// k = topkCount(count, ratio), with run.residual's error feedback.
void allreduceCompressedTopK(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             double ratio, const CompressedRun& run);

// One compressed all-reduce over ctx, dispatched on spec.method: the one
// choice of compressed algorithm, for every device.
void allreduceCompressed(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                         const CompressSpec& spec, const CompressedRun& run);
// The same in host memory: CpuKernels over spec.par and ctx.scratch, the flat
// rules as the dense fallback, `state` (may be null) as the top-k residual.
void allreduceCompressed(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                         const CompressSpec& spec, compression::TensorState* state,
                         CompressionCounters& counters);

// What the group switch runs (Note [Compression switch]): with scope kInter on
// a topology of several nodes with more than one rank on some node, the
// hierarchical all-reduce with exact intra-node stages and allreduceCompressed
// as its inter-node stage (each rank compresses its 1/g shard on its rail, or
// the leaders their node's sum); otherwise (one node, one rank per node, or
// scope kAll) allreduceCompressed over the whole group.
void allreduceCompressedGroup(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                              compression::Scope scope, const CompressSpec& spec,
                              compression::TensorState* state, CompressionCounters& counters);

}  // namespace distx
