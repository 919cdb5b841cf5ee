// CUDA twins of the fp16 / bf16 cast codecs (cast.h): one grid-stride kernel
// per direction; the overflow count is reduced per warp and added once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/error.h"
#include "compression/cuda_kernels.h"

namespace distx {
namespace compression {
namespace cuda {
namespace {

constexpr int kThreads = 256;

void check(cudaError_t err, const char* what) {
  DISTX_CHECK(err == cudaSuccess, TransportError, what, ": ", cudaGetErrorString(err));
}

int gridFor(size_t n) {
  const size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 4096 ? (blocks ? blocks : 1) : 4096);
}

__device__ bool finite(float x) {
  return (__float_as_uint(x) & 0x7fffffffu) < 0x7f800000u;
}

__device__ void addOverflow(unsigned count, unsigned long long* overflow) {
  for (int offset = 16; offset > 0; offset >>= 1)
    count += __shfl_down_sync(0xffffffffu, count, offset);
  if ((threadIdx.x & 31) == 0 && count) atomicAdd(overflow, static_cast<unsigned long long>(count));
}

__global__ void encodeFp16Kernel(const float* src, uint16_t* dst, size_t n, float scale,
                                 unsigned long long* overflow) {
  unsigned count = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float x = src[i];
    const uint16_t h = __half_as_ushort(__float2half_rn(x * scale));
    dst[i] = h;
    count += finite(x) && (h & 0x7fffu) == 0x7c00u;
  }
  if (overflow) addOverflow(count, overflow);
}

__global__ void decodeFp16Kernel(const uint16_t* src, float* dst, size_t n, float scale,
                                 const unsigned long long* guard) {
  if (guard && *guard) return;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    dst[i] = __half2float(__ushort_as_half(src[i])) * scale;
  }
}

// Rounding written out (as bf16.cpp) so NaNs quieten exactly like the CPU.
__global__ void encodeBf16Kernel(const float* src, uint16_t* dst, size_t n, float scale,
                                 unsigned long long* overflow) {
  unsigned count = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float x = src[i];
    const uint32_t u = __float_as_uint(__fmul_rn(x, scale));
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t out = (u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : rounded;
    dst[i] = static_cast<uint16_t>(out);
    count += finite(x) && (out & 0x7fffu) == 0x7f80u;
  }
  if (overflow) addOverflow(count, overflow);
}

__global__ void decodeBf16Kernel(const uint16_t* src, float* dst, size_t n, float scale,
                                 const unsigned long long* guard) {
  if (guard && *guard) return;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    dst[i] = __uint_as_float(static_cast<uint32_t>(src[i]) << 16) * scale;
  }
}

__global__ void countKernel(const uint16_t* src, size_t n, uint16_t mask,
                            unsigned long long* count) {
  unsigned c = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    c += (src[i] & mask) == mask;
  }
  addOverflow(c, count);
}

}  // namespace

void countNonFinite(const uint16_t* src, size_t n, bool bf16, unsigned long long* count,
                    void* stream) {
  if (n == 0) return;
  countKernel<<<gridFor(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      src, n, bf16 ? 0x7f80 : 0x7c00, count);
  check(cudaGetLastError(), "count non-finite");
}

void encodeFp16(const float* src, uint16_t* dst, size_t n, float scale,
                unsigned long long* overflow, void* stream) {
  if (n == 0) return;
  encodeFp16Kernel<<<gridFor(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(src, dst, n,
                                                                                   scale, overflow);
  check(cudaGetLastError(), "fp16 encode");
}

void decodeFp16(const uint16_t* src, float* dst, size_t n, float scale,
                const unsigned long long* guard, void* stream) {
  if (n == 0) return;
  decodeFp16Kernel<<<gridFor(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(src, dst, n,
                                                                                   scale, guard);
  check(cudaGetLastError(), "fp16 decode");
}

void encodeBf16(const float* src, uint16_t* dst, size_t n, float scale,
                unsigned long long* overflow, void* stream) {
  if (n == 0) return;
  encodeBf16Kernel<<<gridFor(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(src, dst, n,
                                                                                   scale, overflow);
  check(cudaGetLastError(), "bf16 encode");
}

void decodeBf16(const uint16_t* src, float* dst, size_t n, float scale,
                const unsigned long long* guard, void* stream) {
  if (n == 0) return;
  decodeBf16Kernel<<<gridFor(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(src, dst, n,
                                                                                   scale, guard);
  check(cudaGetLastError(), "bf16 decode");
}

const CastKernels& castKernels(Method m) {
  static const CastKernels fp16{encodeFp16, decodeFp16, false};
  static const CastKernels bf16{encodeBf16, decodeBf16, true};
  if (m == Method::kFp16) return fp16;
  DISTX_CHECK(m == Method::kBf16, InvalidArgument, "'", methodName(m), "' is not a cast codec");
  return bf16;
}

}  // namespace cuda
}  // namespace compression
}  // namespace distx
