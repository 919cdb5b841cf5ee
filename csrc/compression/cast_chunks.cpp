#include "compression/cast_chunks.h"

#include <atomic>

#include "compression/simd.h"

namespace distx {
namespace compression {
namespace {

DISTX_CLONES size_t countExpAllOnesLoop(const uint16_t* __restrict src, size_t n, uint16_t mask) {
  size_t count = 0;
  for (size_t i = 0; i < n; ++i)
    count += (src[i] & mask) == mask;
  return count;
}

}  // namespace

size_t encodeChunks(EncodeKernel encode, const float* src, uint16_t* dst, size_t n, float scale,
                    const Parallel& par) {
  std::atomic<size_t> overflow{0};
  parallelRange(n, kStreamGrain, par,
                [&](size_t b, size_t e) { overflow += encode(src + b, dst + b, e - b, scale); });
  return overflow.load();
}

void decodeChunks(DecodeKernel decode, const uint16_t* src, float* dst, size_t n, float scale,
                  const Parallel& par) {
  parallelRange(n, kStreamGrain, par,
                [&](size_t b, size_t e) { decode(src + b, dst + b, e - b, scale); });
}

size_t countExpAllOnes(const uint16_t* src, size_t n, uint16_t expMask, const Parallel& par) {
  std::atomic<size_t> count{0};
  parallelRange(n, kStreamGrain, par,
                [&](size_t b, size_t e) { count += countExpAllOnesLoop(src + b, e - b, expMask); });
  return count.load();
}

}  // namespace compression
}  // namespace distx
