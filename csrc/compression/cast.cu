// CUDA twins of the fp16 / bf16 cast codecs (cast.h): one grid-stride kernel
// per direction, for either format; the overflow count is reduced per warp
// and added once.
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

// The two formats: a code from x * scale, a float from a code, and the code
// of +inf (the exponent mask, which NaN and -inf codes also fill).
struct Fp16 {
  static constexpr uint16_t kInf = 0x7c00;
  __device__ static uint16_t encode(float x, float scale) {
    return __half_as_ushort(__float2half_rn(x * scale));
  }
  __device__ static float decode(uint16_t code) { return __half2float(__ushort_as_half(code)); }
};

struct Bf16 {
  static constexpr uint16_t kInf = 0x7f80;
  // Rounding written out (as bf16.cpp) so NaNs quieten exactly like the CPU.
  __device__ static uint16_t encode(float x, float scale) {
    const uint32_t u = __float_as_uint(__fmul_rn(x, scale));
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : rounded);
  }
  __device__ static float decode(uint16_t code) {
    return __uint_as_float(static_cast<uint32_t>(code) << 16);
  }
};

template <class Format>
__global__ void encodeKernel(const float* src, uint16_t* dst, size_t n, float scale,
                             unsigned long long* overflow) {
  unsigned count = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float x = src[i];
    const uint16_t code = Format::encode(x, scale);
    dst[i] = code;
    count += finite(x) && (code & 0x7fffu) == Format::kInf;
  }
  if (overflow) addOverflow(count, overflow);
}

template <class Format>
__global__ void decodeKernel(const uint16_t* src, float* dst, size_t n, float scale,
                             const unsigned long long* guard) {
  if (guard && *guard) return;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    dst[i] = Format::decode(src[i]) * scale;
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

// Launches kernel(args...) over n elements on `stream` (nothing when n == 0)
// and turns a launch error into TransportError naming `what`.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), size_t n, void* stream, const char* what, Args... args) {
  if (n == 0) return;
  kernel<<<gridFor(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(args...);
  check(cudaGetLastError(), what);
}

}  // namespace

void countNonFinite(const uint16_t* src, size_t n, bool bf16, unsigned long long* count,
                    void* stream) {
  launch(countKernel, n, stream, "count non-finite", src, n, bf16 ? Bf16::kInf : Fp16::kInf, count);
}

void encodeFp16(const float* src, uint16_t* dst, size_t n, float scale,
                unsigned long long* overflow, void* stream) {
  launch(encodeKernel<Fp16>, n, stream, "fp16 encode", src, dst, n, scale, overflow);
}

void decodeFp16(const uint16_t* src, float* dst, size_t n, float scale,
                const unsigned long long* guard, void* stream) {
  launch(decodeKernel<Fp16>, n, stream, "fp16 decode", src, dst, n, scale, guard);
}

void encodeBf16(const float* src, uint16_t* dst, size_t n, float scale,
                unsigned long long* overflow, void* stream) {
  launch(encodeKernel<Bf16>, n, stream, "bf16 encode", src, dst, n, scale, overflow);
}

void decodeBf16(const uint16_t* src, float* dst, size_t n, float scale,
                const unsigned long long* guard, void* stream) {
  launch(decodeKernel<Bf16>, n, stream, "bf16 decode", src, dst, n, scale, guard);
}

const CastKernels& castKernels(Method m) {
  static const CastKernels fp16{encodeFp16, decodeFp16, false};
  static const CastKernels bf16{encodeBf16, decodeBf16, true};
  checkCast(m);
  return m == Method::kFp16 ? fp16 : bf16;
}

}  // namespace cuda
}  // namespace compression
}  // namespace distx
