// fp32 <-> fp16 cast codec (see cast.h). On x86-64 with F16C the hot loops use
// VCVTPS2PH / VCVTPH2PS, 8 lanes at a time, round to nearest even (the same
// results as common/half.h, which handles the tails and other CPUs).
#include <atomic>
#include <cmath>
#include <cstring>

#include "common/half.h"
#include "compression/cast.h"
#include "compression/simd.h"

#if DISTX_X86_DISPATCH
#include <immintrin.h>
#endif

namespace distx {
namespace compression {
namespace {

inline bool finiteBits(float x) {
  return (floatToBits(x) & 0x7fffffffu) < 0x7f800000u;
}

size_t encodeScalar(const float* src, uint16_t* dst, size_t n, float scale) {
  size_t overflow = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = floatToHalf(src[i] * scale);
    dst[i] = h;
    overflow += finiteBits(src[i]) && (h & 0x7fffu) == 0x7c00u;
  }
  return overflow;
}

void decodeScalar(const uint16_t* src, float* dst, size_t n, float scale) {
  for (size_t i = 0; i < n; ++i)
    dst[i] = halfToFloat(src[i]) * scale;
}

#if DISTX_X86_DISPATCH
__attribute__((target("avx,f16c"))) size_t encodeF16c(const float* src, uint16_t* dst, size_t n,
                                                      float scale) {
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 limit = _mm256_set1_ps(65520.0f);  // smallest |y| that rounds to inf
  const __m256 inf = _mm256_set1_ps(INFINITY);
  size_t overflow = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    const __m256 y = _mm256_mul_ps(x, vscale);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT));
    const __m256 big = _mm256_cmp_ps(_mm256_and_ps(y, absMask), limit, _CMP_GE_OQ);
    const __m256 finite = _mm256_cmp_ps(_mm256_and_ps(x, absMask), inf, _CMP_LT_OQ);
    overflow += __builtin_popcount(_mm256_movemask_ps(_mm256_and_ps(big, finite)));
  }
  return overflow + encodeScalar(src + i, dst + i, n - i, scale);
}

__attribute__((target("avx,f16c"))) void decodeF16c(const uint16_t* src, float* dst, size_t n,
                                                    float scale) {
  const __m256 vscale = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtph_ps(h), vscale));
  }
  decodeScalar(src + i, dst + i, n - i, scale);
}

bool haveF16c() {
  static const bool have = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return have;
}
#endif

}  // namespace

const char* fp16KernelName() {
#if DISTX_X86_DISPATCH
  if (haveF16c()) return "f16c";
#endif
  return "scalar";
}

size_t encodeFp16(const float* src, uint16_t* dst, size_t n, float scale, const Parallel& par) {
  std::atomic<size_t> overflow{0};
  parallelRange(n, kStreamGrain, par, [&](size_t b, size_t e) {
#if DISTX_X86_DISPATCH
    if (haveF16c()) {
      overflow += encodeF16c(src + b, dst + b, e - b, scale);
      return;
    }
#endif
    overflow += encodeScalar(src + b, dst + b, e - b, scale);
  });
  return overflow.load();
}

void decodeFp16(const uint16_t* src, float* dst, size_t n, float scale, const Parallel& par) {
  parallelRange(n, kStreamGrain, par, [&](size_t b, size_t e) {
#if DISTX_X86_DISPATCH
    if (haveF16c()) return decodeF16c(src + b, dst + b, e - b, scale);
#endif
    decodeScalar(src + b, dst + b, e - b, scale);
  });
}

}  // namespace compression
}  // namespace distx
