// Top-k selection (see topk.h for the contract).
//
// Schedule: radix select on the magnitude bits, then nth_element on one bin.
//   pass 1  a = x*scale (+ r, stored back into r); per-chunk histogram of
//           key >> 20 (2048 bins: exponent + 3 mantissa bits; 8 KiB, in L1).
//   scan    walk the merged histogram from the top to the bin b* holding the
//           k-th largest key; `need` keys must still come from b*.
//   pass 2  gather b*'s keys (typically a few % of n) in chunk order;
//           nth_element on a copy gives the exact threshold key t; m = how
//           many keys equal to t are taken (ties go to the lowest indices).
//   offsets per chunk: keys > t (histogram bins above b* + its slice of the
//           gathered keys) and keys == t give each chunk its output offset and
//           tie quota, so pass 3 writes pairs in ascending index order with no
//           merge step.
//   pass 3  write the pairs, zero the selected residual entries.
// Cost: three streaming reads and one write of n floats, O(n) histogram
// updates, and nth_element over one bin. No sort of n elements anywhere.
#include "compression/topk.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "common/error.h"
#include "common/half.h"

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

// The entry a[i] as pass 1 left it: in the residual, or recomputed.
struct Source {
  const float* x;
  float* residual;
  float scale;
  float at(size_t i) const { return residual ? residual[i] : x[i] * scale; }
};

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
    uint32_t* h = &hist[c * kBins];
    const size_t e = begin(c + 1);
    if (residual) {
      for (size_t i = begin(c); i < e; ++i) {
        const float a = x[i] * scale + residual[i];
        residual[i] = a;
        ++h[keyOf(a) >> kBinShift];
      }
    } else {
      for (size_t i = begin(c); i < e; ++i)
        ++h[keyOf(x[i] * scale) >> kBinShift];
    }
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

  // Pass 2: gather that bin's keys in chunk order; exact threshold.
  std::vector<size_t> candBegin(chunks + 1, 0);
  for (size_t c = 0; c < chunks; ++c)
    candBegin[c + 1] = candBegin[c] + hist[c * kBins + bin];
  std::vector<uint32_t> cand(candBegin[chunks]);
  par.run(chunks, [&](size_t c) {
    size_t o = candBegin[c];
    const size_t e = begin(c + 1);
    for (size_t i = begin(c); i < e; ++i) {
      const uint32_t key = keyOf(src.at(i));
      if ((key >> kBinShift) == bin) cand[o++] = key;
    }
  });
  std::vector<uint32_t> sorted(cand);
  std::nth_element(sorted.begin(), sorted.begin() + (need - 1), sorted.end(),
                   std::greater<uint32_t>());
  const uint32_t threshold = sorted[need - 1];
  const size_t greaterInBin =
      std::count_if(sorted.begin(), sorted.end(), [&](uint32_t v) { return v > threshold; });
  const size_t tiesTaken = need - greaterInBin;

  // Offsets: each chunk's output position and its share of the ties.
  std::vector<size_t> outBegin(chunks + 1, 0), tieQuota(chunks, 0);
  for (size_t c = 0, tiesBefore = 0; c < chunks; ++c) {
    size_t greater = 0, ties = 0;
    for (size_t b = bin + 1; b < kBins; ++b)
      greater += hist[c * kBins + b];
    for (size_t j = candBegin[c]; j < candBegin[c + 1]; ++j) {
      greater += cand[j] > threshold;
      ties += cand[j] == threshold;
    }
    tieQuota[c] = std::min(ties, tiesTaken - std::min(tiesTaken, tiesBefore));
    tiesBefore += ties;
    outBegin[c + 1] = outBegin[c] + greater + tieQuota[c];
  }

  // Pass 3: write the pairs in index order; update the residual.
  par.run(chunks, [&](size_t c) {
    size_t o = outBegin[c], quota = tieQuota[c];
    const size_t e = begin(c + 1);
    for (size_t i = begin(c); i < e; ++i) {
      const float a = src.at(i);
      const uint32_t key = keyOf(a);
      const bool take = key > threshold || (key == threshold && quota > 0);
      if (take) {
        quota -= key == threshold;
        pairs[2 * o] = static_cast<int32_t>(i);
        pairs[2 * o + 1] = static_cast<int32_t>(floatToBits(a));
        ++o;
        if (residual) residual[i] = 0.0f;
      } else if (residual && key >= kNonFiniteKey) {
        residual[i] = 0.0f;
      }
    }
  });
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
