// What the multi-host CUDA all-reduce (Note [Multi-host CUDA],
// allreduce_hierarchical_cuda.cpp) gives the device-neutral schedule of
// algorithms/allreduce_hierarchical_device.cpp (Note [Device kernels]): the
// CUDA kernels on the internal stream, the NCCL intra-node stages, and the
// device-memory side of its rail.
//
// Note [CUDA-aware rail]
// UCX reads and writes GPU memory itself when it was built with CUDA (the
// libucx-cu13 wheel is; Debian's libucx0 is not). Whether it can is asked
// once per process (Transport::cudaMemory: ucp_context_query's memory
// types; Note [Buffer memory type]) and DISTX_UCX_CUDA (auto | 0 | 1) may
// turn it off or require it.
// The ranks agree at their first multi-host all-reduce (a MIN over the group,
// CudaBackend::railDirect), so the rail is direct only when every rank's UCX
// takes device pointers; CudaKernels::transportTakesDevice() carries the
// agreement into the schedule:
//   direct  the wire buffer of device memory is that memory itself; the
//           internal stream is synchronised before UCX reads it
//           (syncForTransport), and UCX completes a receive only once the
//           bytes are in device memory;
//   staged  a pinned host twin (allocHost), filled by a device-to-host copy on
//           the internal stream before the sends (toHost, which waits for
//           it), copied back after the receives (fromHost, asynchronous: the
//           caching host allocator keeps the twin until the copy is done).
// A staged rank and a direct rank would run different dense algorithms (the
// staged dense rail is the CPU path's defaultRailAllreduce on the host copy;
// the direct one reduces on the GPU, railDenseDirect), hence the agreement.
// The compressed rails (Note [GPU compression]) send the same messages in both
// modes.
// UCX tells device from host pointers through its memory-type cache, which
// learns allocations by hooking cudaMalloc: blocks torch's caching allocator
// got before UCX loaded can be missed, and UCX_MEMTYPE_CACHE=n (ask the driver
// per call) is the remedy. Passing the memory type with each request would
// need it in the Transport interface (not done).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "algorithms/compressed.h"
#include "algorithms/device_kernels.h"
#include "backend/compressor.hpp"
#include "transport/nccl/nccl_comm.h"

namespace distx {

// DeviceKernels on one CUDA device: torch ops and the .cu codecs
// (compression/cuda_kernels.h) enqueued on `stream` (the internal stream).
// Every buffer it hands out is registered with the running job's arena (Note
// [Parked buffers]). One per all-reduce, on the worker thread.
class CudaKernels final : public DeviceKernels {
 public:
  // direct: the group's agreement that UCX takes device memory.
  CudaKernels(c10::Device device, c10::cuda::CUDAStream stream, bool direct);

  // rail_cuda.cpp
  DeviceBuffer alloc(size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void reduce(void* acc, const void* b, size_t count, DType dt, ReduceOp op) override;
  void divide(void* data, size_t count, DType dt, int divisor) override;
  void convert(void* dst, DType to, const void* src, DType from, size_t count) override;
  bool transportTakesDevice() const override { return direct_; }
  void syncForTransport() override;
  DeviceBuffer allocHost(size_t bytes) override;
  void toHost(void* host, const void* dev, size_t bytes) override;
  void fromHost(void* dev, const void* host, size_t bytes) override;
  bool synchronous() const override { return false; }

  // allreduce_compressed_cuda.cpp (Note [GPU compression])
  void encode16(compression::Method m, const float* src, uint16_t* dst, size_t n,
                float scale) override;
  void decode16(compression::Method m, const uint16_t* src, float* dst, size_t n) override;
  size_t countNonFinite16(compression::Method m, const std::vector<CodeRun>& runs) override;
  void encodeTopK(const float* x, float* residual, size_t n, size_t k, int32_t* pairs) override;
  void decodeTopK(const int32_t* pairs, size_t runs, size_t runPairs, size_t n, float scale,
                  float* dense) override;

 private:
  // `count` elements of `dt` at device memory `p`, as a tensor.
  at::Tensor onDevice(const void* p, size_t count, DType dt) const;
  // The pinned twin allocHost gave that holds [p, p + bytes), narrowed to it;
  // undefined if none does.
  at::Tensor hostTwin(const void* p, size_t bytes) const;

  const c10::Device device_;
  const c10::cuda::CUDAStream stream_;
  const bool direct_;
  std::vector<at::Tensor> twins_;  // allocHost's, for fromHost's event
};

// IntraNode over the host's NCCL communicator (its rank is the local rank),
// in place, on `stream`.
class NcclIntraNode final : public IntraNode {
 public:
  NcclIntraNode(nccl::Comm& comm, nccl::Stream stream, Deadline deadline)
      : comm_(comm), stream_(stream), deadline_(deadline) {}
  int size() const override { return comm_.size(); }
  int rank() const override { return comm_.rank(); }
  void reduceScatter(void* data, size_t shard, DType dt, ReduceOp op) override;
  void allGather(void* data, size_t shard, DType dt) override;

 private:
  nccl::Comm& comm_;
  const nccl::Stream stream_;
  const Deadline deadline_;
};

// allreduce_compressed_cuda.cpp: the bucket's top-k residual on `device`
// (Compressor::deviceResidual, zeros when new or resized); empty without
// error feedback.
ResidualFn deviceResidualFn(Compressor& compressor, BucketKey key, c10::Device device);

}  // namespace distx
