// Top-k selection (see topk.h for the contract).
//
// Terms: key = the bits of |a| as uint32 (monotone in magnitude; NaN > inf >
// finite); candidates = (index, key) of the entries that may be among the k
// largest, kept in index order; the combine step is a = x*scale (+ r, stored
// back into r).
//
// Sampled path (1 <= k <= ~10 % of n, n >= 4096):
//   sample  s = n/32 entries (1K..16K) at a fixed stride. The key of rank
//           r = 1.25 mu + 4 sqrt(mu) + 16 in the sample (mu = s k / n, the
//           expected number of top-k entries in it) is a lower bound t_lo that
//           about 1.3-2 k entries reach.
//   pass    one streaming pass combines and gathers every entry with key >=
//           t_lo (SSE2 screens 16 entries per test; hits are ~2 %).
//   If fewer than k were gathered (an unlucky sample, or data with structure
//   at the sampling stride) the exact path runs on the combined values.
// Exact path (radix select; also small n, large k, and all-zero samples):
//   pass 1  combine, and histogram key >> 20 per chunk (2048 bins, 8 KiB).
//   scan    find the bin b* holding the k-th largest key.
//   pass 2  gather every entry in bins >= b*.
// Finish (both): nth_element on the candidates' keys gives the exact k-th
// largest key t and how many keys equal to t are taken (the lowest indices);
// one serial walk writes the pairs in index order and zeroes the residual
// entries sent. Non-finite entries are always candidates, so the walk also
// counts them and drops the unsent ones from the residual.
// Cost: sampled, one streaming pass (read x [and r], write r); exact, two
// passes plus a histogram update per element. Never a sort of n elements.
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
constexpr size_t kSampledMinN = 4096;

inline uint32_t keyOf(float a) {
  return floatToBits(a) & 0x7fffffffu;
}

struct Candidate {
  uint32_t index;
  uint32_t key;
};
using Candidates = std::vector<Candidate>;

// The operands of one call. After combining, a[i] lives in residual[i] (error
// feedback) or is x[i] * scale, recomputed the same way every time.
struct Input {
  const float* x;
  float* residual;
  size_t n;
  float scale;
  float combined(size_t i) const { return residual ? residual[i] : x[i] * scale; }
  float fresh(size_t i) const { return residual ? x[i] * scale + residual[i] : x[i] * scale; }
};

// Appends (i, key(a_i)) for i in [b, e) with key >= loKey; combines first
// (stores a into the residual) when `combine`. SSE2 tests 16 entries at once
// and skips blocks with no hit (keys < 2^31 compare right as int32).
void screen(const Input& in, bool combine, size_t b, size_t e, uint32_t loKey, Candidates& out) {
  size_t i = b;
#if defined(__SSE2__)
  const __m128 vscale = _mm_set1_ps(in.scale);
  const __m128i absMask = _mm_set1_epi32(0x7fffffff);
  const __m128i below = _mm_set1_epi32(static_cast<int32_t>(loKey) - 1);
  auto hits = [&](size_t j) {
    __m128 a;
    if (in.residual && combine) {
      a = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(in.x + j), vscale), _mm_loadu_ps(in.residual + j));
      _mm_storeu_ps(in.residual + j, a);
    } else if (in.residual) {
      a = _mm_loadu_ps(in.residual + j);
    } else {
      a = _mm_mul_ps(_mm_loadu_ps(in.x + j), vscale);
    }
    return _mm_cmpgt_epi32(_mm_and_si128(_mm_castps_si128(a), absMask), below);
  };
  for (; i + 16 <= e; i += 16) {
    const __m128i h0 = hits(i), h1 = hits(i + 4), h2 = hits(i + 8), h3 = hits(i + 12);
    const unsigned mask = static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(h0))) |
                          static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(h1))) << 4 |
                          static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(h2))) << 8 |
                          static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(h3))) << 12;
    for (unsigned m = mask; m; m &= m - 1) {
      const size_t j = i + static_cast<size_t>(__builtin_ctz(m));
      out.push_back({static_cast<uint32_t>(j), keyOf(in.combined(j))});
    }
  }
#endif
  for (; i < e; ++i) {
    if (in.residual && combine) in.residual[i] = in.fresh(i);
    const uint32_t key = keyOf(in.combined(i));
    if (key >= loKey) out.push_back({static_cast<uint32_t>(i), key});
  }
}

// Runs screen() over chunks in parallel and concatenates in index order.
Candidates gatherAll(const Input& in, bool combine, uint32_t loKey, size_t expected,
                     const Parallel& par) {
  const size_t chunks = chunkCount(in.n, kSelectGrain, par);
  std::vector<Candidates> parts(chunks);
  par.run(chunks, [&](size_t c) {
    parts[c].reserve(expected / chunks + 64);
    screen(in, combine, chunkBegin(in.n, chunks, c), chunkBegin(in.n, chunks, c + 1), loKey,
           parts[c]);
  });
  if (chunks == 1) return std::move(parts[0]);
  size_t total = 0;
  for (const auto& p : parts)
    total += p.size();
  Candidates all;
  all.reserve(total);
  for (const auto& p : parts)
    all.insert(all.end(), p.begin(), p.end());
  return all;
}

// The sampled lower bound on the k-th largest key, or 0 when the sampled path
// does not apply.
uint32_t sampledBound(const Input& in, size_t k) {
  if (in.n < kSampledMinN) return 0;
  const size_t s = std::min(in.n, std::clamp<size_t>(in.n / 32, 1024, 16384));
  const double mu = static_cast<double>(s) * static_cast<double>(k) / static_cast<double>(in.n);
  const size_t rank = static_cast<size_t>(1.25 * mu + 4.0 * std::sqrt(mu) + 16.0);
  if (rank > s / 8) return 0;  // dense selections: the histogram costs about the same
  std::vector<uint32_t> keys(s);
  const size_t stride = in.n / s;
  for (size_t j = 0; j < s; ++j)
    keys[j] = keyOf(in.fresh(j * stride + stride / 2));
  std::nth_element(keys.begin(), keys.begin() + (rank - 1), keys.end(), std::greater<uint32_t>());
  return std::min(keys[rank - 1], kNonFiniteKey);  // 0 (all-zero sample): exact path
}

// Radix select: candidates = every entry in the bins at or above the one
// holding the k-th largest key (and every non-finite entry).
Candidates exactCandidates(const Input& in, bool combine, size_t k, const Parallel& par) {
  const size_t chunks = chunkCount(in.n, kSelectGrain, par);
  std::vector<uint32_t> hist(chunks * kBins, 0);
  par.run(chunks, [&](size_t c) {
    // Two interleaved sub-histograms halve the store-to-load chains on hot bins.
    std::vector<uint32_t> sub(2 * kBins, 0);
    const size_t b = chunkBegin(in.n, chunks, c), e = chunkBegin(in.n, chunks, c + 1);
    float* r = in.residual;
    size_t i = b;
    for (; i + 2 <= e; i += 2) {
      float a0, a1;
      if (r && combine) {
        r[i] = a0 = in.fresh(i);
        r[i + 1] = a1 = in.fresh(i + 1);
      } else {
        a0 = in.combined(i);
        a1 = in.combined(i + 1);
      }
      ++sub[keyOf(a0) >> kBinShift];
      ++sub[kBins + (keyOf(a1) >> kBinShift)];
    }
    for (; i < e; ++i) {
      if (r && combine) r[i] = in.fresh(i);
      ++sub[keyOf(in.combined(i)) >> kBinShift];
    }
    uint32_t* h = &hist[c * kBins];
    for (size_t bin = 0; bin < kBins; ++bin)
      h[bin] = sub[bin] + sub[kBins + bin];
  });
  std::vector<size_t> total(kBins, 0);
  for (size_t c = 0; c < chunks; ++c) {
    for (size_t b = 0; b < kBins; ++b)
      total[b] += hist[c * kBins + b];
  }
  size_t bin = kNonFiniteKey >> kBinShift;  // k == 0: only the non-finite entries
  for (size_t b = kBins, above = 0; k > 0 && b-- > 0;) {
    above += total[b];
    if (above >= k) {
      bin = std::min(b, bin);
      break;
    }
  }
  size_t expected = 0;
  for (size_t b = bin; b < kBins; ++b)
    expected += total[b];
  return gatherAll(in, /*combine=*/false, static_cast<uint32_t>(bin) << kBinShift, expected, par);
}

// Exact selection among the candidates (which hold the k largest keys and all
// non-finite entries); writes the pairs and updates the residual.
size_t finish(const Input& in, const Candidates& cand, size_t k, int32_t* pairs) {
  uint32_t threshold = UINT32_MAX;
  size_t ties = 0;
  if (k > 0) {
    std::vector<uint32_t> keys(cand.size());
    for (size_t j = 0; j < cand.size(); ++j)
      keys[j] = cand[j].key;
    std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint32_t>());
    threshold = keys[k - 1];
    ties = k - std::count_if(keys.begin(), keys.end(), [&](uint32_t v) { return v > threshold; });
  }
  size_t o = 0, nonFinite = 0;
  for (const Candidate& cd : cand) {
    nonFinite += cd.key >= kNonFiniteKey;
    const bool take = k > 0 && (cd.key > threshold || (cd.key == threshold && ties > 0));
    if (take) {
      ties -= cd.key == threshold;
      pairs[2 * o] = static_cast<int32_t>(cd.index);
      pairs[2 * o + 1] = static_cast<int32_t>(floatToBits(in.combined(cd.index)));
      ++o;
      if (in.residual) in.residual[cd.index] = 0.0f;
    } else if (in.residual && cd.key >= kNonFiniteKey) {
      in.residual[cd.index] = 0.0f;
    }
  }
  return nonFinite;
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
  const Input in{x, residual, n, scale};
  if (k == 0) {  // combine, and find the non-finite entries to drop from the residual
    return finish(in, gatherAll(in, /*combine=*/true, kNonFiniteKey, 0, par), 0, pairs);
  }
  bool combined = false;
  if (const uint32_t bound = sampledBound(in, k)) {
    Candidates cand = gatherAll(in, /*combine=*/true, bound, 2 * k, par);
    if (cand.size() >= k) return finish(in, cand, k, pairs);
    combined = true;  // too few: fall through, without adding the residual twice
  }
  return finish(in, exactCandidates(in, !combined, k, par), k, pairs);
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
