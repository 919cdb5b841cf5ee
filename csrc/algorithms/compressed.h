// Compressed all-reduces (DESIGN.md, Compression): the group option's
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

#include "algorithms/algorithm.h"
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

// allreduce_compressed_cast.cpp: fp16/bf16 on the wire, float32 accumulation.
// In place over data[count]; op is kSum or kAvg (divides by ctx.size()).
void allreduceCompressedCast(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             const CompressSpec& spec, CompressionCounters& counters);

// allreduce_compressed_topk.cpp: (index, value) all-gather, rank-order sum;
// `state` holds this rank's error-feedback residual (may be null: no feedback).
void allreduceCompressedTopK(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                             const CompressSpec& spec, compression::TensorState* state,
                             CompressionCounters& counters);

// One compressed all-reduce over ctx, dispatched on spec.method.
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
