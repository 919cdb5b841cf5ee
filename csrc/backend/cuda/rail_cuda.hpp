// The inter-node ("rail") stage of the multi-host CUDA all-reduce (Note
// [Multi-host CUDA], allreduce_hierarchical_cuda.cpp): how its buffers reach
// UCX, and the algorithms that keep their arithmetic on the GPU.
//
// Note [CUDA-aware rail]
// UCX reads and writes GPU memory itself when it was built with CUDA (the
// libucx-cu13 wheel is; Debian's libucx0 is not). Whether it can is asked
// once per process (Transport::cudaMemory: ucp_context_query's memory
// types; Note [Buffer memory type]) and DISTX_UCX_CUDA (auto | 0 | 1) may
// turn it off or require it.
// The ranks agree at their first multi-host all-reduce (a MIN over the group),
// so the rail is direct only when every rank's UCX takes device pointers:
//   direct  the wire buffer of a device tensor is the tensor itself; the
//           internal stream is synchronised before UCX reads it, and UCX
//           completes a receive only once the bytes are in device memory;
//   staged  a pinned host twin, filled by a device-to-host copy on the
//           internal stream before the sends, copied back after the receives.
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

#include <functional>

#include "algorithms/algorithm.h"
#include "algorithms/compressed.h"

namespace distx {

class RailWire {
 public:
  RailWire(bool direct, c10::cuda::CUDAStream stream) : direct_(direct), stream_(stream) {}
  bool direct() const { return direct_; }
  void* stream() const { return stream_.stream(); }
  // A buffer UCX may use for `dev` (same shape and dtype): `dev` itself when
  // direct, else a pinned host tensor.
  at::Tensor twin(const at::Tensor& dev) const;
  // Makes what kernels on the stream wrote into `dev` readable by UCX in
  // `wire`; done when it returns.
  void out(const at::Tensor& dev, const at::Tensor& wire) const;
  // Makes what UCX wrote into `wire` visible to later work on the stream.
  void in(const at::Tensor& wire, const at::Tensor& dev) const;

 private:
  const bool direct_;
  const c10::cuda::CUDAStream stream_;
};

// Tag slot of the pairwise segment scatter, above every slot the ring
// all-gather that follows it uses (as allreduce_compressed_cast.cpp).
constexpr uint64_t kRailScatterSlot = tag::kMaxSlots - 1;

// Pairwise scatter over `rail`: segment p of `src` (seg, elements of `elem`
// bytes) goes to rank p, which receives it into slot q (maxSeg elements) of
// its `dst` for each sender q. This rank's own segment is not copied. Wire
// buffers only (RailWire::twin).
void railScatterSegments(CollectiveContext& rail, const void* src, void* dst, const Segments& seg,
                         size_t maxSeg, size_t elem);

// The dense rail of a direct RailWire: scatter the segments, reduce this
// rank's segment on the GPU in rank order, ring all-gather the results. `x`
// is a contiguous CUDA tensor, all-reduced in place with `op` (not AVG).
// Each rank sends about 2(P-1)/P of x, as a ring does.
void railDenseDirect(CollectiveContext& rail, at::Tensor& x, ReduceOp op, const RailWire& wire);

// The uncompressed rail the compressed ones fall back to (in place on x).
using DenseRailFn = std::function<void(CollectiveContext& rail, at::Tensor& x, ReduceOp op)>;

// allreduce_compressed_cuda.cpp (Note [GPU compression]): x is a contiguous
// float32 CUDA tensor, op SUM or AVG; in place, bit-identical on every rank.
void railCompressedCast(CollectiveContext& rail, at::Tensor& x, ReduceOp op, bool bf16,
                        CompressionCounters& counters, const RailWire& wire,
                        const DenseRailFn& dense);
// residual: the bucket's device residual (resized to zeros when it does not
// match x), or null without error feedback.
void railCompressedTopK(CollectiveContext& rail, at::Tensor& x, ReduceOp op, double ratio,
                        at::Tensor* residual, CompressionCounters& counters, const RailWire& wire,
                        const DenseRailFn& dense);

}  // namespace distx
