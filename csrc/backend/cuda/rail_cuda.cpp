// Note [Device kernels] on CUDA (rail_cuda.hpp): memory, arithmetic and the
// transport's view of device memory on the internal stream (the codecs are
// in allreduce_compressed_cuda.cpp), and the NCCL intra-node stages. The
// schedules they serve are in algorithms/ (allreduce_hierarchical_device.cpp,
// allreduce_rail_direct.cpp); reduce() is the one reduce-op switch the CUDA
// rail had.
#include "backend/cuda/rail_cuda.hpp"

#include <c10/cuda/CUDAGuard.h>

#include "backend/contig.hpp"
#include "backend/tensor_checks.hpp"
#include "common/error.h"

namespace distx {
namespace {

int64_t len(size_t v) {
  return static_cast<int64_t>(v);
}

}  // namespace

CudaKernels::CudaKernels(c10::Device device, c10::cuda::CUDAStream stream, bool direct)
    : device_(device), stream_(stream), direct_(direct) {}

at::Tensor CudaKernels::onDevice(const void* p, size_t count, DType dt) const {
  return at::from_blob(const_cast<void*>(p), {len(count)},
                       at::TensorOptions().dtype(toScalarType(dt)).device(device_));
}

DeviceBuffer CudaKernels::alloc(size_t bytes) {
  const c10::cuda::CUDAStreamGuard guard(stream_);
  auto t = std::make_shared<at::Tensor>(
      parked(at::empty({len(bytes)}, at::TensorOptions().dtype(at::kByte).device(device_))));
  void* data = t->data_ptr();
  return DeviceBuffer(data, std::move(t));
}

void CudaKernels::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  onDevice(dst, bytes, DType::kUInt8).copy_(onDevice(src, bytes, DType::kUInt8));
}

void CudaKernels::zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  onDevice(dst, bytes, DType::kUInt8).zero_();
}

void CudaKernels::reduce(void* acc, const void* b, size_t count, DType dt, ReduceOp op) {
  if (count == 0) return;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  at::Tensor a = onDevice(acc, count, dt);
  const at::Tensor x = onDevice(b, count, dt);
  switch (op) {
    case ReduceOp::kSum:
      a.add_(x);
      return;
    case ReduceOp::kProduct:
      a.mul_(x);
      return;
    case ReduceOp::kMin:
      a.copy_(at::minimum(a, x));
      return;
    case ReduceOp::kMax:
      a.copy_(at::maximum(a, x));
      return;
    case ReduceOp::kBAnd:
      a.bitwise_and_(x);
      return;
    case ReduceOp::kBOr:
      a.bitwise_or_(x);
      return;
    case ReduceOp::kBXor:
      a.bitwise_xor_(x);
      return;
    case ReduceOp::kAvg:
      break;
  }
  throw InvalidArgument(detail::concat("device kernels: ReduceOp.", reduceOpName(op),
                                       " reaches the kernels as SUM plus a division"));
}

void CudaKernels::divide(void* data, size_t count, DType dt, int divisor) {
  if (count == 0) return;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  at::Tensor t = onDevice(data, count, dt);
  if (at::isFloatingType(t.scalar_type()) || at::isComplexType(t.scalar_type())) {
    t.div_(divisor);
  } else {
    t.copy_(at::div(t, divisor, "trunc"));
  }
}

void CudaKernels::convert(void* dst, DType to, const void* src, DType from, size_t count) {
  if (count == 0) return;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  onDevice(dst, count, to).copy_(onDevice(src, count, from));
}

void CudaKernels::syncForTransport() {
  stream_.synchronize();  // UCX reads device memory outside the stream
}

DeviceBuffer CudaKernels::allocHost(size_t bytes) {
  at::Tensor t = parked(at::empty(
      {len(bytes)}, at::TensorOptions().dtype(at::kByte).device(at::kCPU).pinned_memory(true)));
  twins_.push_back(t);
  void* data = t.data_ptr();
  return DeviceBuffer(data, std::make_shared<at::Tensor>(std::move(t)));
}

at::Tensor CudaKernels::hostTwin(const void* p, size_t bytes) const {
  const auto* q = static_cast<const uint8_t*>(p);
  for (const at::Tensor& t : twins_) {
    const auto* base = static_cast<const uint8_t*>(t.data_ptr());
    if (q >= base && q + bytes <= base + t.numel()) return t.narrow(0, q - base, len(bytes));
  }
  return {};
}

void CudaKernels::toHost(void* host, const void* dev, size_t bytes) {
  if (bytes == 0) return;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  // Device-to-host on the internal stream, after the work before it; waits.
  at::from_blob(host, {len(bytes)}, at::TensorOptions().dtype(at::kByte))
      .copy_(onDevice(dev, bytes, DType::kUInt8));
}

void CudaKernels::fromHost(void* dev, const void* host, size_t bytes) {
  if (bytes == 0) return;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  at::Tensor twin = hostTwin(host, bytes);
  if (twin.defined()) {
    // Asynchronous: the copy records an event with the caching host
    // allocator, which keeps the twin until the copy is done.
    onDevice(dev, bytes, DType::kUInt8).copy_(twin, /*non_blocking=*/true);
    return;
  }
  onDevice(dev, bytes, DType::kUInt8)
      .copy_(at::from_blob(const_cast<void*>(host), {len(bytes)},
                           at::TensorOptions().dtype(at::kByte)));  // not ours: waits
}

void NcclIntraNode::reduceScatter(void* data, size_t shard, DType dt, ReduceOp op) {
  auto* d = static_cast<uint8_t*>(data);
  // In place: NCCL reduces into the rank's own block of the send buffer.
  comm_.reduceScatter(d, d + rank() * shard * dtypeSize(dt), shard, dt, op, stream_, deadline_);
}

void NcclIntraNode::allGather(void* data, size_t shard, DType dt) {
  auto* d = static_cast<uint8_t*>(data);
  comm_.allGather(d + rank() * shard * dtypeSize(dt), d, shard, dt, stream_, deadline_);
}

}  // namespace distx
