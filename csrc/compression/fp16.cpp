// fp32 <-> fp16 cast codec (see cast.h). On x86-64 the hot loops use
// VCVTPS2PH / VCVTPH2PS, 16 lanes with AVX-512F or 8 with F16C, round to
// nearest even (the same results as common/half.h, which handles the tails
// and other CPUs).
#include <cmath>
#include <cstring>

#include "common/half.h"
#include "compression/cast.h"
#include "compression/cast_chunks.h"
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
// Exact overflow count of an encoded range; the vector loops only track
// whether any |x*scale| reached the limit and call this when one did (rare).
size_t recount(const float* src, const uint16_t* dst, size_t n) {
  size_t overflow = 0;
  for (size_t i = 0; i < n; ++i)
    overflow += finiteBits(src[i]) && (dst[i] & 0x7fffu) == 0x7c00u;
  return overflow;
}

// How a vector encoder ends after its last whole block, at i: the recount of
// [0, i) if a lane reached the limit, plus the scalar loop over the tail.
size_t finishEncode(bool reachedLimit, const float* src, uint16_t* dst, size_t i, size_t n,
                    float scale) {
  return (reachedLimit ? recount(src, dst, i) : 0) + encodeScalar(src + i, dst + i, n - i, scale);
}

__attribute__((target("avx,f16c"))) size_t encodeF16c(const float* src, uint16_t* dst, size_t n,
                                                      float scale) {
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 limit = _mm256_set1_ps(65520.0f);  // smallest |y| that rounds to inf
  __m256 seen = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(src + i), vscale);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT));
    seen = _mm256_or_ps(seen, _mm256_cmp_ps(_mm256_and_ps(y, absMask), limit, _CMP_GE_OQ));
  }
  return finishEncode(_mm256_movemask_ps(seen) != 0, src, dst, i, n, scale);
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

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// AVX-512F: 16 lanes; "any |y| at the limit" collects in a mask register.
__attribute__((target("avx512f"))) size_t encodeAvx512(const float* src, uint16_t* dst, size_t n,
                                                       float scale) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const __m512 limit = _mm512_set1_ps(65520.0f);
  __mmask16 seen = 0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 y = _mm512_mul_ps(_mm512_loadu_ps(src + i), vscale);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT));
    seen |= _mm512_cmp_ps_mask(_mm512_abs_ps(y), limit, _CMP_GE_OQ);
  }
  return finishEncode(seen != 0, src, dst, i, n, scale);
}

__attribute__((target("avx512f"))) void decodeAvx512(const uint16_t* src, float* dst, size_t n,
                                                     float scale) {
  const __m512 vscale = _mm512_set1_ps(scale);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_cvtph_ps(h), vscale));
  }
  decodeScalar(src + i, dst + i, n - i, scale);
}

#pragma GCC diagnostic pop
#endif

// Chosen once, on the first call.
const CastLoops& loops() {
  static const CastLoops chosen = [] {
#if DISTX_X86_DISPATCH
    if (__builtin_cpu_supports("avx512f")) return CastLoops{"avx512f", encodeAvx512, decodeAvx512};
    if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c"))
      return CastLoops{"f16c", encodeF16c, decodeF16c};
#endif
    return CastLoops{"scalar", encodeScalar, decodeScalar};
  }();
  return chosen;
}

}  // namespace

const char* fp16KernelName() {
  return loops().name;
}

size_t encodeFp16(const float* src, uint16_t* dst, size_t n, float scale, const Parallel& par) {
  return encodeChunks(loops().encode, src, dst, n, scale, par);
}

void decodeFp16(const uint16_t* src, float* dst, size_t n, float scale, const Parallel& par) {
  decodeChunks(loops().decode, src, dst, n, scale, par);
}

size_t countNonFiniteFp16(const uint16_t* src, size_t n, const Parallel& par) {
  return countExpAllOnes(src, n, 0x7c00u, par);
}

}  // namespace compression
}  // namespace distx
