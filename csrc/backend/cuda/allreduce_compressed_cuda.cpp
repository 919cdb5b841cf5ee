// Note [GPU compression]
// The group compression switch (Note [Compression switch]) on CUDA tensors: in
// a multi-host group the hierarchical all-reduce's inter-node stage runs the
// compressed all-reduces on this rank's GPU shard, with the CUDA codecs
// (compression/cuda_kernels.h) as the kernels; the NCCL stages inside the host
// stay exact. Only the codec payload crosses to the host (or, CUDA-aware, goes
// straight to UCX: Note [CUDA-aware rail]).
// A single-host group is all NCCL and is never compressed; the scope setting
// does not apply to CUDA tensors (NCCL inside the host is always exact).
// The schedules are the CPU path's, written once against DeviceKernels (Note
// [Device kernels]): algorithms/allreduce_compressed_cast.cpp (encode,
// scatter, float32 sum in rank order encoded once, all-gather, a dense redo on
// the untouched float32 shard where a gathered code is NaN/inf) and
// algorithms/allreduce_compressed_topk.cpp (error feedback with the residual
// on the device, all-gather of the pairs, rank-order decode; dense past
// density × rail ranks >= 1), chosen by allreduceCompressed and entered from
// railAllreduceDevice, so the C++ tests run them with the CPU kernels. The
// dense fallback is the rail's dense stage (direct or staged). float16 /
// bfloat16 tensors (top-k) are compressed through a float32 copy of the shard.
// What stays here is CUDA: the codec kernels on the internal stream, the one
// read-back of the non-finite count, the top-k scratch and the device
// residual.
// Invariant: as on the CPU, every rank ends bit-identical: each reduced value
// is computed once, and every rank decodes the same bytes in the same order
// (top-k's decode adds distinct indices per block, one block after another).
// Cost: the CPU algorithms' wire bytes, plus device-host copies of the codes
// when staged. codecNanos is not counted for the GPU (kernels are async).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include "backend/cuda/rail_cuda.hpp"
#include "compression/cuda_kernels.h"

namespace distx {

namespace cxc = compression::cuda;

void CudaKernels::encode16(compression::Method m, const float* src, uint16_t* dst, size_t n,
                           float scale) {
  cxc::castKernels(m).encode(src, dst, n, scale, nullptr, stream_.stream());
}

void CudaKernels::decode16(compression::Method m, const uint16_t* src, float* dst, size_t n) {
  cxc::castKernels(m).decode(src, dst, n, 1.0f, nullptr, stream_.stream());
}

size_t CudaKernels::countNonFinite16(compression::Method m, const std::vector<CodeRun>& runs) {
  const bool bf16 = cxc::castKernels(m).bf16;
  const c10::cuda::CUDAStreamGuard guard(stream_);
  at::Tensor bad = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(device_));
  auto* count = reinterpret_cast<unsigned long long*>(bad.data_ptr<int64_t>());
  for (const CodeRun& run : runs)
    cxc::countNonFinite(run.codes, run.count, bf16, count, stream_.stream());
  return static_cast<size_t>(bad.item<int64_t>());  // waits for the count
}

void CudaKernels::encodeTopK(const float* x, float* residual, size_t n, size_t k, int32_t* pairs) {
  const c10::cuda::CUDAStreamGuard guard(stream_);
  at::Tensor scratch = at::empty({static_cast<int64_t>(cxc::topkScratchBytes(n))},
                                 at::TensorOptions().dtype(at::kByte).device(device_));
  cxc::encodeTopK(x, residual, n, k, 1.0f, pairs, scratch.data_ptr(), stream_.stream());
}

void CudaKernels::decodeTopK(const int32_t* pairs, size_t runs, size_t runPairs, size_t n,
                             float scale, float* dense) {
  cxc::decodeTopK(pairs, runs, runPairs, n, scale, dense, /*accumulate=*/false, stream_.stream());
}

ResidualFn deviceResidualFn(Compressor& compressor, BucketKey key, c10::Device device) {
  at::Tensor* residual = compressor.deviceResidual(key);
  if (!residual) return {};
  return [residual, device](size_t n) {
    if (!residual->defined() || residual->numel() != static_cast<int64_t>(n) ||
        residual->device() != device) {
      // A new bucket, or one whose size changed.
      *residual = at::zeros({static_cast<int64_t>(n)},
                            at::TensorOptions().dtype(at::kFloat).device(device));
    }
    return residual->data_ptr<float>();
  };
}

}  // namespace distx
