// What the codec tests share (test_codecs.cpp: casts, test_codecs_topk.cpp:
// top-k): random inputs, an uneven thread pool, float bits.
#pragma once

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/half.h"
#include "compression/parallel.h"

namespace distx::compression::codec_testing {

inline constexpr float kInf = std::numeric_limits<float>::infinity();
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A pool with a thread count the chunking does not divide evenly.
inline Parallel oddParallel() {
  Parallel p = defaultParallel();
  p.threads = 7;
  return p;
}

inline std::vector<float> randomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v)
    x = dist(gen);
  return v;
}

inline uint32_t bits(float f) {
  return floatToBits(f);
}

}  // namespace distx::compression::codec_testing
