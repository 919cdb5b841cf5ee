// fp16 / bf16 reduction kernels (see reduce_lowp.h).
//
// The scalar kernel is the reference: widen with halfToFloat / bf16ToFloat,
// reduce in float, round back with floatToHalf / floatToBf16 (common/half.h).
// The AVX2 kernel does the same 8 lanes at a time and is bit-identical to it
// on every input, which tests/cpp/test_reduce_lowp.cpp checks exhaustively:
//  - fp16 -> float with VCVTPH2PS and back with VCVTPS2PH, round to nearest
//    even; both are exact/correctly rounded as the scalar code is. The one
//    difference is NaN: VCVTPS2PH keeps the payload, floatToHalf returns the
//    canonical quiet NaN (sign | 0x7e00), so NaN lanes are replaced by
//    sign | 0x7fc00000 first, which converts to exactly that;
//  - bf16 <-> float is integer work (shift; add 0x7fff + lsb, shift; NaN ->
//    high half | 0x40), the scalar formulas lane-wise;
//  - MIN/MAX use VMINPS/VMAXPS with the operands ordered so that NaN and
//    signed-zero cases pick the same operand as the scalar `b < a ? b : a`;
//  - SUM/PRODUCT pin which NaN payload wins, in both kernels (Note [NaN payloads]).
// No FMA: the target is "avx2,f16c" only, so float results cannot differ.
// The guard mirrors compression/simd.h (x86-64 Linux, GCC or Clang); the
// kernel is chosen at run time with __builtin_cpu_supports.
#include "common/reduce_lowp.h"

#include "common/half.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define DISTX_LOWP_X86 1
#include <immintrin.h>
#else
#define DISTX_LOWP_X86 0
#endif

namespace distx::lowp {
namespace {

// The AVX2 kernel's load/store of each format (defined with it, on x86 only).
struct HalfLanes;
struct Bf16Lanes;

// ------------------------------------------------------------- scalar kernel

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float), typename F>
void scalarLoop(uint16_t* __restrict d, const uint16_t* __restrict s, size_t n, F f) {
  for (size_t i = 0; i < n; ++i)
    d[i] = FromF(f(ToF(d[i]), ToF(s[i])));
}

// Note [NaN payloads]
// bf16 keeps a NaN's payload (floatToBf16), and which payload a + b or a * b
// returns when both are NaN depends on the operand order the compiler picks
// for a commutative instruction. SUM and PRODUCT therefore pin it: a's NaN if
// a is NaN, else b's if b is NaN, else the hardware's result. MIN and MAX
// already pick one operand. fp16 results map every NaN to one value.
inline float pinNan(float r, float a, float b) {
  return r == r ? r : a != a ? a : b != b ? b : r;
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
void reduceScalar(uint16_t* d, const uint16_t* s, size_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return scalarLoop<ToF, FromF>(d, s, n, [](float a, float b) { return pinNan(a + b, a, b); });
    case ReduceOp::kProduct:
      return scalarLoop<ToF, FromF>(d, s, n, [](float a, float b) { return pinNan(a * b, a, b); });
    case ReduceOp::kMin:
      return scalarLoop<ToF, FromF>(d, s, n, [](float a, float b) { return b < a ? b : a; });
    case ReduceOp::kMax:
      return scalarLoop<ToF, FromF>(d, s, n, [](float a, float b) { return a < b ? b : a; });
    default:
      break;
  }
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
void divideScalar(uint16_t* d, size_t n, int divisor) {
  for (size_t i = 0; i < n; ++i)
    d[i] = FromF(ToF(d[i]) / static_cast<float>(divisor));
}

// --------------------------------------------------------------- AVX2 kernel

#if DISTX_LOWP_X86
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define DISTX_AVX2 __attribute__((target("avx2,f16c"), always_inline)) inline

struct HalfLanes {
  DISTX_AVX2 static __m256 load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  DISTX_AVX2 static void store(uint16_t* p, __m256 y) {
    const __m256 isNan = _mm256_cmp_ps(y, y, _CMP_UNORD_Q);
    const __m256 sign = _mm256_and_ps(y, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN)));
    const __m256 quiet = _mm256_or_ps(sign, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)));
    y = _mm256_blendv_ps(y, quiet, isNan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT));
  }
};

struct Bf16Lanes {
  DISTX_AVX2 static __m256 load(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  DISTX_AVX2 static void store(uint16_t* p, __m256 y) {
    const __m256i u = _mm256_castps_si256(y);
    const __m256i hi = _mm256_srli_epi32(u, 16);
    const __m256i isNan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                             _mm256_set1_epi32(0x7f800000));
    const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i quiet = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    const __m256i r = _mm256_blendv_epi8(rounded, quiet, isNan);  // every lane < 0x10000
    const __m128i packed =
        _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
};

// pinNan() lane-wise (Note [NaN payloads]).
DISTX_AVX2 __m256 pinNanLanes(__m256 r, __m256 a, __m256 b) {
  r = _mm256_blendv_ps(r, b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
  return _mm256_blendv_ps(r, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
struct VAdd {
  DISTX_AVX2 static __m256 apply(__m256 a, __m256 b) {
    return pinNanLanes(_mm256_add_ps(a, b), a, b);
  }
};
struct VMul {
  DISTX_AVX2 static __m256 apply(__m256 a, __m256 b) {
    return pinNanLanes(_mm256_mul_ps(a, b), a, b);
  }
};
struct VMin {  // b < a ? b : a
  DISTX_AVX2 static __m256 apply(__m256 a, __m256 b) { return _mm256_min_ps(b, a); }
};
struct VMax {  // a < b ? b : a
  DISTX_AVX2 static __m256 apply(__m256 a, __m256 b) { return _mm256_max_ps(b, a); }
};

// Whole blocks of 8; returns how many elements it did (the caller does the tail).
template <class Lanes, class Op>
__attribute__((target("avx2,f16c"))) size_t vecLoop(uint16_t* d, const uint16_t* s, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = Op::apply(Lanes::load(d + i), Lanes::load(s + i));
    const __m256 x1 = Op::apply(Lanes::load(d + i + 8), Lanes::load(s + i + 8));
    Lanes::store(d + i, x0);
    Lanes::store(d + i + 8, x1);
  }
  for (; i + 8 <= n; i += 8)
    Lanes::store(d + i, Op::apply(Lanes::load(d + i), Lanes::load(s + i)));
  return i;
}

template <class Lanes>
size_t reduceAvx2(uint16_t* d, const uint16_t* s, size_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return vecLoop<Lanes, VAdd>(d, s, n);
    case ReduceOp::kProduct:
      return vecLoop<Lanes, VMul>(d, s, n);
    case ReduceOp::kMin:
      return vecLoop<Lanes, VMin>(d, s, n);
    case ReduceOp::kMax:
      return vecLoop<Lanes, VMax>(d, s, n);
    default:
      return 0;
  }
}

template <class Lanes>
__attribute__((target("avx2,f16c"))) size_t divideAvx2(uint16_t* d, size_t n, int divisor) {
  const __m256 div = _mm256_set1_ps(static_cast<float>(divisor));
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    Lanes::store(d + i, _mm256_div_ps(Lanes::load(d + i), div));
  return i;
}

#undef DISTX_AVX2
#pragma GCC diagnostic pop

bool haveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return have;
}
#endif  // DISTX_LOWP_X86

// Both formats: the AVX2 kernel (when chosen and present) takes the whole
// blocks, the scalar one the rest.
template <class Lanes, float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
void reduceWith(uint16_t* dst, const uint16_t* src, size_t n, ReduceOp op, Kernel k) {
  size_t done = 0;
#if DISTX_LOWP_X86
  if (k == Kernel::kAvx2 && haveAvx2()) done = reduceAvx2<Lanes>(dst, src, n, op);
#endif
  reduceScalar<ToF, FromF>(dst + done, src + done, n - done, op);
}

template <class Lanes, float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
void divideWith(uint16_t* data, size_t n, int divisor, Kernel k) {
  size_t done = 0;
#if DISTX_LOWP_X86
  if (k == Kernel::kAvx2 && haveAvx2()) done = divideAvx2<Lanes>(data, n, divisor);
#endif
  divideScalar<ToF, FromF>(data + done, n - done, divisor);
}

}  // namespace

bool kernelAvailable(Kernel k) {
  if (k == Kernel::kScalar) return true;
#if DISTX_LOWP_X86
  return haveAvx2();
#else
  return false;
#endif
}

Kernel bestKernel() {
  return kernelAvailable(Kernel::kAvx2) ? Kernel::kAvx2 : Kernel::kScalar;
}

const char* kernelName(Kernel k) {
  return k == Kernel::kAvx2 ? "avx2+f16c" : "scalar";
}

void reduceHalf(uint16_t* dst, const uint16_t* src, size_t n, ReduceOp op, Kernel k) {
  reduceWith<HalfLanes, halfToFloat, floatToHalf>(dst, src, n, op, k);
}

void reduceBf16(uint16_t* dst, const uint16_t* src, size_t n, ReduceOp op, Kernel k) {
  reduceWith<Bf16Lanes, bf16ToFloat, floatToBf16>(dst, src, n, op, k);
}

void divideHalf(uint16_t* data, size_t n, int divisor, Kernel k) {
  divideWith<HalfLanes, halfToFloat, floatToHalf>(data, n, divisor, k);
}

void divideBf16(uint16_t* data, size_t n, int divisor, Kernel k) {
  divideWith<Bf16Lanes, bf16ToFloat, floatToBf16>(data, n, divisor, k);
}

}  // namespace distx::lowp
