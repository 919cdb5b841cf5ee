// fp32 <-> bfloat16 cast codec (see cast.h). Both loops are branch-free integer
// code (the rounding of common/half.h's floatToBf16, written with selects) so
// the compiler vectorises them; DISTX_CLONES adds an AVX2 build.
#include <atomic>
#include <cstring>

#include "common/half.h"
#include "compression/cast.h"
#include "compression/simd.h"

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

}  // namespace

size_t encodeBf16(const float* src, uint16_t* dst, size_t n, float scale, const Parallel& par) {
  std::atomic<size_t> overflow{0};
  parallelRange(n, kStreamGrain, par, [&](size_t b, size_t e) {
    overflow += encodeLoop(src + b, dst + b, e - b, scale);
  });
  return overflow.load();
}

void decodeBf16(const uint16_t* src, float* dst, size_t n, float scale, const Parallel& par) {
  parallelRange(n, kStreamGrain, par,
                [&](size_t b, size_t e) { decodeLoop(src + b, dst + b, e - b, scale); });
}

}  // namespace compression
}  // namespace distx
