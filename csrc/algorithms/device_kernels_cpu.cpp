// Note [Device kernels] (device_kernels.h): the host-memory kernels (the
// reductions of common/reduce.h, the codecs of compression/) and the ring
// intra-node stages, with which the CPU runs the device-neutral schedules:
// the compressed all-reduces of the CPU path, and in the C++ tests the CUDA
// path's hierarchical schedule.
#include <algorithm>
#include <cstring>

#include "algorithms/device_kernels.h"
#include "common/error.h"
#include "common/reduce.h"
#include "compression/cast.h"
#include "compression/topk.h"

namespace distx {

CpuKernels::CpuKernels(CpuKernelsOptions options) : options_(options) {}

const compression::Parallel& CpuKernels::par() const {
  return options_.par ? *options_.par : compression::defaultParallel();
}

DeviceBuffer CpuKernels::fresh(size_t bytes) {
  std::shared_ptr<uint8_t> mem(new uint8_t[std::max<size_t>(bytes, 1)],
                               std::default_delete<uint8_t[]>());
  uint8_t* data = mem.get();
  return DeviceBuffer(data, std::move(mem));
}

DeviceBuffer CpuKernels::alloc(size_t bytes) {
  if (!options_.arena || *arenaLent_) return fresh(bytes);
  std::vector<uint8_t>& a = *options_.arena;
  if (a.size() < std::max<size_t>(bytes, 1)) a.resize(std::max<size_t>(bytes, 1));
  *arenaLent_ = true;
  // The handle gives the arena back; the flag outlives this object if need be.
  std::shared_ptr<void> lease(nullptr, [lent = arenaLent_](void*) { *lent = false; });
  return DeviceBuffer(a.data(), std::move(lease));
}

DeviceBuffer CpuKernels::allocHost(size_t bytes) {
  return fresh(bytes);
}

void CpuKernels::copy(void* dst, const void* src, size_t bytes) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}

void CpuKernels::zero(void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}

void CpuKernels::reduce(void* acc, const void* b, size_t count, DType dt, ReduceOp op) {
  reduceInto(acc, b, count, dt, op);
}

void CpuKernels::divide(void* data, size_t count, DType dt, int divisor) {
  finishAvg(data, count, dt, divisor);
}

void CpuKernels::convert(void* dst, DType to, const void* src, DType from, size_t count) {
  if (to == from) {
    copy(dst, src, count * dtypeSize(to));
    return;
  }
  const bool toF32 = to == DType::kFloat32, fromF32 = from == DType::kFloat32;
  const DType other = toF32 ? from : to;
  DISTX_CHECK((toF32 || fromF32) && (other == DType::kFloat16 || other == DType::kBFloat16),
              Unsupported, "device kernels: no conversion from ", dtypeName(from), " to ",
              dtypeName(to));
  const compression::Method c =
      other == DType::kFloat16 ? compression::Method::kFp16 : compression::Method::kBf16;
  if (toF32) {
    decode16(c, static_cast<const uint16_t*>(src), static_cast<float*>(dst), count);
  } else {
    encode16(c, static_cast<const float*>(src), static_cast<uint16_t*>(dst), count, 1.0f);
  }
}

void CpuKernels::encode16(compression::Method m, const float* src, uint16_t* dst, size_t n,
                          float scale) {
  const compression::CastKernels& c = compression::castKernels(m);
  if (n) c.encode(src, dst, n, scale, par());
}

void CpuKernels::decode16(compression::Method m, const uint16_t* src, float* dst, size_t n) {
  const compression::CastKernels& c = compression::castKernels(m);
  if (n) c.decode(src, dst, n, 1.0f, par());
}

size_t CpuKernels::countNonFinite16(compression::Method m, const std::vector<CodeRun>& runs) {
  const compression::CastKernels& c = compression::castKernels(m);
  size_t bad = 0;
  for (const CodeRun& run : runs) {
    if (run.count) bad += c.countNonFinite(run.codes, run.count, par());
  }
  return bad;
}

void CpuKernels::encodeTopK(const float* x, float* residual, size_t n, size_t k, int32_t* pairs) {
  compression::encodeTopK(x, residual, n, k, 1.0f, pairs, par());
}

void CpuKernels::decodeTopK(const int32_t* pairs, size_t runs, size_t runPairs, size_t n,
                            float scale, float* dense) {
  compression::decodeTopK(pairs, runs * runPairs, n, scale, dense, /*accumulate=*/false, par());
}

// --- RingIntraNode ----------------------------------------------------------

namespace {

constexpr uint32_t kIntraReduceScatterPhase = 1;
constexpr uint32_t kIntraAllgatherPhase = 3;

}  // namespace

RingIntraNode::RingIntraNode(const CollectiveContext& ctx) : ctx_(ctx) {
  const Topology t = contextTopology(ctx);
  node_ = t.node(t.nodeOf(ctx.rank()));
  rank_ = t.localRank(ctx.rank());
}

void RingIntraNode::reduceScatter(void* data, size_t shard, DType dt, ReduceOp op) {
  if (size() == 1) return;
  CollectiveContext node = ctx_.narrow(node_, kIntraReduceScatterPhase);
  reduceScatterRing(node, data, shard, dt, op);
}

void RingIntraNode::allGather(void* data, size_t shard, DType dt) {
  if (size() == 1) return;
  CollectiveContext node = ctx_.narrow(node_, kIntraAllgatherPhase);
  const size_t bytes = shard * dtypeSize(dt);
  std::vector<void*> blocks(size());
  for (int i = 0; i < size(); ++i)
    blocks[i] = static_cast<uint8_t*>(data) + i * bytes;
  allgatherRing(node, blocks, bytes);
}

}  // namespace distx
