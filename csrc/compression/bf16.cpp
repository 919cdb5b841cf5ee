// fp32 <-> bfloat16 cast codec (see cast.h). Both loops are branch-free integer
// code (the rounding of common/half.h's floatToBf16, written with selects) so
// the compiler vectorises them; DISTX_CLONES adds an AVX2 build. On x86 with
// AVX2 or AVX-512F the encoder is written out with intrinsics (16 lanes per
// iteration): narrowing 32 -> 16 bits is where the compiler's version loses
// time.
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

DISTX_CLONES size_t encodeLoop(const float* __restrict src, uint16_t* __restrict dst, size_t n,
                               float scale) {
  size_t overflow = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t x, u;
    const float y = src[i] * scale;
    std::memcpy(&x, &src[i], 4);
    std::memcpy(&u, &y, 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // nearest even
    const uint32_t quietNan = (u >> 16) | 0x40u;
    const uint32_t out = (u & 0x7fffffffu) > 0x7f800000u ? quietNan : rounded;
    dst[i] = static_cast<uint16_t>(out);
    overflow += ((x & 0x7fffffffu) < 0x7f800000u) & ((out & 0x7fffu) == 0x7f80u);
  }
  return overflow;
}

DISTX_CLONES void decodeLoop(const uint16_t* __restrict src, float* __restrict dst, size_t n,
                             float scale) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    dst[i] = f * scale;
  }
}

#if DISTX_X86_DISPATCH
// |y| bits above this round to bf16 inf (0x7f7f8000 is the halfway point to
// inf, which ties to even = up) or are inf/NaN already.
constexpr uint32_t kRoundsToInfBits = 0x7f7f7fffu;

// Exact overflow count of an encoded range; the vector loops only track
// whether any lane came near inf and call this when one did (rare).
size_t recount(const float* src, const uint16_t* dst, size_t n) {
  size_t overflow = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t x;
    std::memcpy(&x, &src[i], 4);
    overflow += ((x & 0x7fffffffu) < 0x7f800000u) && (dst[i] & 0x7fffu) == 0x7f80u;
  }
  return overflow;
}

// How a vector encoder ends after its last whole block, at i: the recount of
// [0, i) if a lane came near inf, plus the scalar loop over the tail.
size_t finishEncode(bool nearInf, const float* src, uint16_t* dst, size_t i, size_t n,
                    float scale) {
  return (nearInf ? recount(src, dst, i) : 0) + encodeLoop(src + i, dst + i, n - i, scale);
}

// 8 floats -> 8 bf16 codes in the low halves of 32-bit lanes.
// `seen` collects lanes whose |x*scale| rounds to inf or is inf/NaN.
__attribute__((target("avx2"))) inline __m256i narrowAvx2(const float* p, __m256 vscale,
                                                          __m256i& seen) {
  const __m256i absMask = _mm256_set1_epi32(0x7fffffff);
  const __m256i expMask = _mm256_set1_epi32(0x7f800000);
  const __m256i u = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(p), vscale));
  const __m256i kRoundsToInf = _mm256_set1_epi32(static_cast<int32_t>(kRoundsToInfBits));
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i roundBias =
      _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(hi, _mm256_set1_epi32(1)));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, roundBias), 16);
  const __m256i isNan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absMask), expMask);
  const __m256i out =
      _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), isNan);
  seen = _mm256_or_si256(seen, _mm256_cmpgt_epi32(_mm256_and_si256(u, absMask), kRoundsToInf));
  return out;
}

__attribute__((target("avx2"))) size_t encodeAvx2(const float* src, uint16_t* dst, size_t n,
                                                  float scale) {
  const __m256 vscale = _mm256_set1_ps(scale);
  __m256i seen = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i lo = narrowAvx2(src + i, vscale, seen);
    const __m256i hi = narrowAvx2(src + i + 8, vscale, seen);
    // packus works per 128-bit lane: restore element order with a 64-bit permute.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  return finishEncode(!_mm256_testz_si256(seen, seen), src, dst, i, n, scale);
}

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) size_t encodeAvx512(const float* src, uint16_t* dst, size_t n,
                                                       float scale) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const __m512i absMask = _mm512_set1_epi32(0x7fffffff);
  const __m512i expMask = _mm512_set1_epi32(0x7f800000);
  __mmask16 seen = 0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(src + i), vscale));
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __m512i roundBias =
        _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, roundBias), 16);
    const __mmask16 isNan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absMask), expMask);
    const __m512i out =
        _mm512_mask_blend_epi32(isNan, rounded, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(out));
    seen |= _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absMask),
                                    _mm512_set1_epi32(static_cast<int32_t>(kRoundsToInfBits)));
  }
  return finishEncode(seen != 0, src, dst, i, n, scale);
}

#pragma GCC diagnostic pop
#endif

// Chosen once, on the first call (every CPU decodes with the compiler-vectorised loop).
const CastLoops& loops() {
  static const CastLoops chosen = [] {
#if DISTX_X86_DISPATCH
    if (__builtin_cpu_supports("avx512f")) return CastLoops{"avx512f", encodeAvx512, decodeLoop};
    if (__builtin_cpu_supports("avx2")) return CastLoops{"avx2", encodeAvx2, decodeLoop};
#endif
    return CastLoops{"scalar", encodeLoop, decodeLoop};
  }();
  return chosen;
}

}  // namespace

size_t encodeBf16(const float* src, uint16_t* dst, size_t n, float scale, const Parallel& par) {
  return encodeChunks(loops().encode, src, dst, n, scale, par);
}

void decodeBf16(const uint16_t* src, float* dst, size_t n, float scale, const Parallel& par) {
  decodeChunks(loops().decode, src, dst, n, scale, par);
}

size_t countNonFiniteBf16(const uint16_t* src, size_t n, const Parallel& par) {
  return countExpAllOnes(src, n, 0x7f80u, par);
}

}  // namespace compression
}  // namespace distx
