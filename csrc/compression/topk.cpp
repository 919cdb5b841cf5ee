// Top-k selection (see topk.h for the contract).
//
// Schedule: radix select on the magnitude bits, then nth_element on one bin.
//   pass 1  a = x*scale (+ r, stored back into r); per-chunk histogram of
//           key >> 20 (2048 bins: exponent + 3 mantissa bits; 8 KiB, in L1).
//   scan    walk the merged histogram from the top to the bin b* holding the
//           k-th largest key; `need` keys must still come from b*.
//   pass 2  gather (index, key) of every entry in bins >= b* -- the k winners
//           plus the rest of b*, typically 1-3 % of n -- in index order, each
//           chunk at an offset its histogram already gives.
//   select  nth_element on b*'s keys gives the exact threshold key t and how
//           many keys equal to t are taken (the lowest indices); one serial
//           walk over the candidates writes the pairs in index order and
//           zeroes the residual entries sent.
// Cost: two streaming reads of n floats (one write with error feedback), one
// histogram update per element, and work proportional to the candidates. No
// sort of n elements anywhere.
#include "compression/topk.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "common/error.h"
#include "common/half.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace distx {
namespace compression {
namespace {

constexpr int kBinShift = 20;
constexpr size_t kBins = size_t{1} << (31 - kBinShift);  // keys have 31 bits
constexpr uint32_t kNonFiniteKey = 0x7f800000u;          // keys >= this: inf or NaN
constexpr size_t kSelectGrain = size_t{1} << 15;

inline uint32_t keyOf(float a) {
  return floatToBits(a) & 0x7fffffffu;
}

struct Candidate {
  uint32_t index;
  uint32_t key;
};

// The entry a[i] as pass 1 left it: in the residual, or recomputed.
struct Source {
  const float* x;
  float* residual;
  float scale;
  float at(size_t i) const { return residual ? residual[i] : x[i] * scale; }
};

// Appends (i, key) for i in [b, e) with key >= loKey, where the entries are
// src[i] * scale (src = the residual with scale 1, or x). Candidates are rare
// (1-3 %), so on x86 blocks of 16 are first tested with SSE2 compares and
// skipped whole when none qualifies (keys < 2^31 compare right as int32).
void gather(Candidate* out, Candidate* outEnd, const float* src, float scale, size_t b, size_t e,
            uint32_t loKey) {
  size_t i = b;
#if defined(__SSE2__)
  const __m128 vscale = _mm_set1_ps(scale);
  const __m128i absMask = _mm_set1_epi32(0x7fffffff);
  const __m128i below = _mm_set1_epi32(static_cast<int32_t>(loKey) - 1);
  auto hits = [&](size_t j) {
    const __m128i key =
        _mm_and_si128(_mm_castps_si128(_mm_mul_ps(_mm_loadu_ps(src + j), vscale)), absMask);
    return _mm_cmpgt_epi32(key, below);
  };
  for (; i + 16 <= e; i += 16) {
    const __m128i any =
        _mm_or_si128(_mm_or_si128(hits(i), hits(i + 4)), _mm_or_si128(hits(i + 8), hits(i + 12)));
    if (_mm_movemask_epi8(any) == 0) continue;
    for (size_t j = i; j < i + 16; ++j) {
      const uint32_t key = keyOf(src[j] * scale);
      if (key >= loKey && out != outEnd) *out++ = {static_cast<uint32_t>(j), key};
    }
  }
#endif
  for (; i < e; ++i) {
    const uint32_t key = keyOf(src[i] * scale);
    if (key >= loKey && out != outEnd) *out++ = {static_cast<uint32_t>(i), key};
  }
  // Pass 1 counted these same keys; a mismatch would be a bug, never a silent overrun.
  DISTX_CHECK(out == outEnd, Error, "top-k: candidate count changed between passes");
}

}  // namespace

size_t topkCount(size_t n, double ratio) {
  DISTX_CHECK(ratio >= 0.0 && ratio <= 1.0, InvalidArgument, "top-k ratio must be in [0, 1], got ",
              ratio);
  if (n == 0 || ratio == 0.0) return 0;
  const size_t k = static_cast<size_t>(std::floor(ratio * static_cast<double>(n) + 0.5));
  return std::min(n, std::max<size_t>(1, k));
}

size_t encodeTopK(const float* x, float* residual, size_t n, size_t k, float scale, int32_t* pairs,
                  const Parallel& par) {
  DISTX_CHECK(k <= n, InvalidArgument, "top-k: k = ", k, " exceeds the ", n, " elements");
  DISTX_CHECK(n <= static_cast<size_t>(INT32_MAX), InvalidArgument, "top-k: ", n,
              " elements do not fit int32 indices");
  const Source src{x, residual, scale};
  const size_t chunks = chunkCount(n, kSelectGrain, par);
  auto begin = [&](size_t c) { return chunkBegin(n, chunks, c); };

  // Pass 1: combine with the residual and histogram the keys.
  std::vector<uint32_t> hist(chunks * kBins, 0);
  par.run(chunks, [&](size_t c) {
    // Two interleaved sub-histograms halve the store-to-load chains on hot bins.
    uint32_t sub[2][kBins] = {};
    const size_t b = begin(c), e = begin(c + 1);
    const float s = scale;
    const float* xs = x;
    float* rs = residual;
    size_t i = b;
    if (rs) {
      for (; i + 2 <= e; i += 2) {
        const float a0 = xs[i] * s + rs[i], a1 = xs[i + 1] * s + rs[i + 1];
        rs[i] = a0;
        rs[i + 1] = a1;
        ++sub[0][keyOf(a0) >> kBinShift];
        ++sub[1][keyOf(a1) >> kBinShift];
      }
      for (; i < e; ++i) {
        const float a = xs[i] * s + rs[i];
        rs[i] = a;
        ++sub[0][keyOf(a) >> kBinShift];
      }
    } else {
      for (; i + 2 <= e; i += 2) {
        ++sub[0][keyOf(xs[i] * s) >> kBinShift];
        ++sub[1][keyOf(xs[i + 1] * s) >> kBinShift];
      }
      for (; i < e; ++i)
        ++sub[0][keyOf(xs[i] * s) >> kBinShift];
    }
    uint32_t* h = &hist[c * kBins];
    for (size_t bin = 0; bin < kBins; ++bin)
      h[bin] = sub[0][bin] + sub[1][bin];
  });
  std::vector<size_t> total(kBins, 0);
  for (size_t c = 0; c < chunks; ++c) {
    for (size_t b = 0; b < kBins; ++b)
      total[b] += hist[c * kBins + b];
  }
  size_t nonFinite = 0;
  for (size_t b = kNonFiniteKey >> kBinShift; b < kBins; ++b)
    nonFinite += total[b];

  if (k == 0) {
    if (residual && nonFinite) {
      parallelRange(n, kSelectGrain, par, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
          if (keyOf(residual[i]) >= kNonFiniteKey) residual[i] = 0.0f;
        }
      });
    }
    return nonFinite;
  }

  // Scan: the bin holding the k-th largest key.
  size_t bin = kBins, need = 0;
  for (size_t b = kBins, above = 0; b-- > 0;) {
    if (above + total[b] >= k) {
      bin = b;
      need = k - above;
      break;
    }
    above += total[b];
  }

  // Pass 2: gather every entry in bins >= lo, in index order. Non-finite
  // entries are always gathered so the residual can drop the unsent ones.
  const size_t lo =
      (residual && nonFinite) ? std::min<size_t>(bin, kNonFiniteKey >> kBinShift) : bin;
  std::vector<size_t> candBegin(chunks + 1, 0);
  for (size_t c = 0; c < chunks; ++c) {
    size_t count = 0;
    for (size_t b = lo; b < kBins; ++b)
      count += hist[c * kBins + b];
    candBegin[c + 1] = candBegin[c] + count;
  }
  std::vector<Candidate> cand(candBegin[chunks]);
  const uint32_t loKey = static_cast<uint32_t>(lo) << kBinShift;
  par.run(chunks, [&](size_t c) {
    Candidate* out = cand.data() + candBegin[c];
    Candidate* outEnd = cand.data() + candBegin[c + 1];
    if (residual) {
      gather(out, outEnd, residual, 1.0f, begin(c), begin(c + 1), loKey);
    } else {
      gather(out, outEnd, x, scale, begin(c), begin(c + 1), loKey);
    }
  });

  // Select: the exact threshold within bin b*, then the pairs in index order.
  std::vector<uint32_t> inBin;
  inBin.reserve(total[bin]);
  for (const Candidate& cd : cand) {
    if ((cd.key >> kBinShift) == bin) inBin.push_back(cd.key);
  }
  std::nth_element(inBin.begin(), inBin.begin() + (need - 1), inBin.end(),
                   std::greater<uint32_t>());
  const uint32_t threshold = inBin[need - 1];
  size_t ties =
      need - std::count_if(inBin.begin(), inBin.end(), [&](uint32_t v) { return v > threshold; });
  size_t o = 0;
  for (const Candidate& cd : cand) {
    const bool take = cd.key > threshold || (cd.key == threshold && ties > 0);
    if (take) {
      ties -= cd.key == threshold;
      pairs[2 * o] = static_cast<int32_t>(cd.index);
      pairs[2 * o + 1] = static_cast<int32_t>(floatToBits(src.at(cd.index)));
      ++o;
      if (residual) residual[cd.index] = 0.0f;
    } else if (residual && cd.key >= kNonFiniteKey) {
      residual[cd.index] = 0.0f;
    }
  }
  return nonFinite;
}

void decodeTopK(const int32_t* pairs, size_t count, size_t n, float scale, float* dense,
                bool accumulate, const Parallel& par) {
  for (size_t j = 0; j < count; ++j) {
    const int64_t idx = pairs[2 * j];
    DISTX_CHECK(idx >= 0 && static_cast<size_t>(idx) < n, InvalidArgument, "top-k decode: pair ", j,
                " has index ", idx, " outside [0, ", n, ")");
  }
  if (!accumulate) {
    parallelRange(n, kSelectGrain * 4, par,
                  [&](size_t b, size_t e) { std::memset(dense + b, 0, (e - b) * sizeof(float)); });
  }
  // Serial: pairs from different ranks hit the same indices, and the summation
  // order must be the same on every rank so replicas stay bit-identical.
  for (size_t j = 0; j < count; ++j) {
    dense[pairs[2 * j]] += bitsToFloat(static_cast<uint32_t>(pairs[2 * j + 1])) * scale;
  }
}

}  // namespace compression
}  // namespace distx
