// Dispatch and byte accounting shared by the compressed all-reduces.
#include "algorithms/compressed.h"

#include "algorithms/select.h"
#include "compression/cast.h"

namespace distx {

uint64_t denseRingBytes(size_t count, size_t elem, int P, int r) {
  if (P <= 1) return 0;
  const Segments seg{count, P};
  return (2 * count - seg.size(mod(r + 1, P)) - seg.size(mod(r + 2, P))) * elem;
}

void allreduceCompressed(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                         const CompressSpec& spec, const CompressedRun& run) {
  switch (spec.method) {
    case compression::Method::kFp16:
    case compression::Method::kBf16:
      allreduceCompressedCast(ctx, data, count, op, spec.method, run);
      return;
    case compression::Method::kTopK:
      allreduceCompressedTopK(ctx, data, count, op, spec.ratio, run);
      return;
    case compression::Method::kNone:
      break;
  }
  throw InvalidArgument("compressed all-reduce called with compression off");
}

void allreduceCompressed(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                         const CompressSpec& spec, compression::TensorState* state,
                         CompressionCounters& counters) {
  CpuKernelsOptions options;
  options.par = spec.par;
  options.arena = ctx.scratch;
  CpuKernels kernels(options);
  const RailAllreduceFn dense = [](CollectiveContext& c, void* d, size_t n, DType dt, ReduceOp o) {
    selectAllreduce(n * dtypeSize(dt), c.size(), "").fn(c, d, n, dt, o);
  };
  ResidualFn residual;
  if (spec.errorFeedback && state) {
    residual = [state](size_t n) {
      if (state->residual.size() != n) state->residual.assign(n, 0.0f);
      return state->residual.data();
    };
  }
  allreduceCompressed(ctx, data, count, op, spec,
                      CompressedRun{kernels, counters, dense, spec.denseElemBytes, residual});
}

void allreduceCompressedGroup(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                              compression::Scope scope, const CompressSpec& spec,
                              compression::TensorState* state, CompressionCounters& counters) {
  const bool railOnly = scope == compression::Scope::kInter && ctx.topology &&
                        ctx.topology->size() == ctx.size() && !ctx.topology->isFlat();
  if (!railOnly) {
    allreduceCompressed(ctx, data, count, op, spec, state, counters);
    return;
  }
  const RailAllreduceFn rail = [&](CollectiveContext& railCtx, void* d, size_t n, DType dt,
                                   ReduceOp railOp) {
    DISTX_CHECK(dt == DType::kFloat32, InvalidArgument,
                "compressed rail all-reduce: expected float32 data, got ", dtypeName(dt));
    allreduceCompressed(railCtx, static_cast<float*>(d), n, railOp, spec, state, counters);
  };
  if (!compression::isCast(spec.method)) {
    allreduceHierarchical(ctx, data, count, DType::kFloat32, op, rail);
    return;
  }
  // fp16/bf16: where the split-rail runs pipelined, its rail casts piece by
  // piece (Note [Pipelined split-rail]); elsewhere the rail function above.
  const compression::Parallel& par = spec.par ? *spec.par : compression::defaultParallel();
  const compression::CastKernels& k = compression::castKernels(spec.method);
  RailCast cast;
  cast.encode = [&](const float* src, uint16_t* dst, size_t n, float scale) {
    k.encode(src, dst, n, scale, par);
  };
  cast.decode = [&](const uint16_t* src, float* dst, size_t n) {
    k.decode(src, dst, n, 1.0f, par);
  };
  cast.countNonFinite = [&](const uint16_t* src, size_t n) {
    return k.countNonFinite(src, n, par);
  };
  cast.account = [&](size_t shard, int railSize, int railRank, uint64_t wire, uint64_t nanos,
                     uint64_t redos) {
    counters.calls.fetch_add(1, std::memory_order_relaxed);
    counters.inputBytes.fetch_add(shard * spec.denseElemBytes, std::memory_order_relaxed);
    counters.denseBytes.fetch_add(denseRingBytes(shard, spec.denseElemBytes, railSize, railRank),
                                  std::memory_order_relaxed);
    counters.wireBytes.fetch_add(wire, std::memory_order_relaxed);
    counters.codecNanos.fetch_add(nanos, std::memory_order_relaxed);
    counters.fallbackNonFinite.fetch_add(redos, std::memory_order_relaxed);
  };
  allreduceHierarchical(ctx, data, count, DType::kFloat32, op, rail, &cast);
}

}  // namespace distx
