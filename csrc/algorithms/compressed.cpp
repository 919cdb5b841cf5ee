// Dispatch and byte accounting shared by the compressed all-reduces.
#include "algorithms/compressed.h"

#include "algorithms/select.h"

namespace distx {

uint64_t denseRingBytes(size_t count, size_t elem, int P, int r) {
  if (P <= 1) return 0;
  const Segments seg{count, P};
  return (2 * count - seg.size(mod(r + 1, P)) - seg.size(mod(r + 2, P))) * elem;
}

void allreduceCompressed(CollectiveContext& ctx, float* data, size_t count, ReduceOp op,
                         const CompressSpec& spec, compression::TensorState* state,
                         CompressionCounters& counters) {
  switch (spec.method) {
    case compression::Method::kFp16:
    case compression::Method::kBf16:
      allreduceCompressedCast(ctx, data, count, op, spec, counters);
      return;
    case compression::Method::kTopK:
      allreduceCompressedTopK(ctx, data, count, op, spec, state, counters);
      return;
    case compression::Method::kNone:
      break;
  }
  throw InvalidArgument("compressed all-reduce called with compression off");
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
  allreduceHierarchical(ctx, data, count, DType::kFloat32, op, rail);
}

}  // namespace distx
