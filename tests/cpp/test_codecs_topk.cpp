// Compression codecs (csrc/compression), top-k: against a full-sort oracle,
// the error-feedback invariant bit for bit, k = 0, 1, n, ties, NaN/Inf,
// thread-count independence, decoding, the top-k codec object across ranks.
// Casts: test_codecs.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "codec_testing.h"
#include "common/error.h"
#include "common/half.h"
#include "compression/codec.h"
#include "compression/topk.h"

namespace distx {
namespace compression {
namespace {

using namespace codec_testing;

// ---------------------------------------------------------------- top-k

struct Sparse {
  std::vector<int32_t> idx;
  std::vector<float> val;
};

Sparse unpack(const std::vector<int32_t>& pairs) {
  Sparse s;
  for (size_t j = 0; j < pairs.size() / 2; ++j) {
    s.idx.push_back(pairs[2 * j]);
    s.val.push_back(bitsToFloat(static_cast<uint32_t>(pairs[2 * j + 1])));
  }
  return s;
}

// Oracle: full sort by (|a| bits descending, index ascending), first k, then
// indices ascending.
std::vector<int32_t> oracleIndices(const std::vector<float>& a, size_t k) {
  std::vector<int32_t> order(a.size());
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int32_t i) { return bits(a[i]) & 0x7fffffffu; };
  std::sort(order.begin(), order.end(),
            [&](int32_t l, int32_t r) { return key(l) != key(r) ? key(l) > key(r) : l < r; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

Sparse encode(const std::vector<float>& x, std::vector<float>* residual, size_t k,
              const Parallel& par = defaultParallel(), size_t* nonFinite = nullptr) {
  std::vector<int32_t> pairs(2 * k, -7);
  const size_t nf = encodeTopK(x.data(), residual ? residual->data() : nullptr, x.size(), k, 1.0f,
                               pairs.data(), par);
  if (nonFinite) *nonFinite = nf;
  return unpack(pairs);
}

TEST(TopK, MatchesSortOracleAcrossSizesAndK) {
  for (size_t n : {1, 2, 7, 1009, 100003, (1 << 18) + 5}) {
    const auto x = randomFloats(n, static_cast<uint32_t>(n));
    for (size_t k : {size_t{0}, size_t{1}, n / 100, n / 2, n - 1, n}) {
      for (const Parallel* par : {&serialParallel(), &defaultParallel()}) {
        const Sparse s = encode(x, nullptr, k, *par);
        ASSERT_EQ(s.idx, oracleIndices(x, k)) << "n=" << n << " k=" << k;
        for (size_t j = 0; j < k; ++j)
          ASSERT_EQ(bits(s.val[j]), bits(x[s.idx[j]]));
      }
    }
  }
}

TEST(TopK, ErrorFeedbackInvariantIsExact) {
  const size_t n = 200003;
  auto residual = randomFloats(n, 11, 0.5f);
  for (int step = 0; step < 4; ++step) {
    const auto grad = randomFloats(n, 100 + step);
    std::vector<float> a(n);
    for (size_t i = 0; i < n; ++i)
      a[i] = grad[i] + residual[i];  // fl(g + r), fp32
    const size_t k = topkCount(n, 0.01);
    const Sparse s = encode(grad, &residual, k, oddParallel());
    ASSERT_EQ(s.idx, oracleIndices(a, k));
    std::vector<float> sent(n, 0.0f);
    for (size_t j = 0; j < k; ++j)
      sent[s.idx[j]] = s.val[j];
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(bits(sent[i] + residual[i]), bits(a[i])) << "step " << step << " i " << i;
      if (sent[i] != 0.0f) ASSERT_EQ(residual[i], 0.0f);
    }
  }
}

// topk.cpp samples every (n / s)-th entry (s = n / 32 within [1024, 16384]) to
// bound the k-th largest key. Data whose large entries sit exactly on the
// sample yields too few candidates; the exact path must take over, on values
// already combined with the residual (not adding it twice).
TEST(TopK, MisleadingSampleFallsBackToExactSelection) {
  const size_t n = 65536, stride = n / 2048;
  std::vector<float> grad(n, 1.0f);
  for (size_t j = 0; j < n / stride; ++j)
    grad[j * stride + stride / 2] = 100.0f;
  grad[7] = -3.0f;
  auto residual = randomFloats(n, 21, 0.01f);
  std::vector<float> a(n);
  for (size_t i = 0; i < n; ++i)
    a[i] = grad[i] + residual[i];
  const size_t k = n / 20;  // more than the 2048 sampled entries
  const Sparse s = encode(grad, &residual, k, oddParallel());
  ASSERT_EQ(s.idx, oracleIndices(a, k));
  for (size_t j = 0; j < k; ++j)
    ASSERT_EQ(bits(s.val[j]), bits(a[s.idx[j]]));
  std::vector<float> sent(n, 0.0f);
  for (size_t j = 0; j < k; ++j)
    sent[s.idx[j]] = s.val[j];
  for (size_t i = 0; i < n; ++i)
    ASSERT_EQ(bits(sent[i] + residual[i]), bits(a[i])) << i;
}

TEST(TopK, MostlyZerosTakeTheLowestZeroIndices) {
  std::vector<float> x(100000, 0.0f);
  x[99999] = -1.0f;
  x[5000] = 2.0f;
  for (size_t k : {size_t{1}, size_t{2}, size_t{10}, size_t{1000}}) {
    const Sparse s = encode(x, nullptr, k, oddParallel());
    EXPECT_EQ(s.idx, oracleIndices(x, k)) << k;
  }
}

TEST(TopK, KZeroKeepsEverythingInResidual) {
  const auto grad = randomFloats(1000, 5);
  std::vector<float> residual(1000, 0.25f);
  encode(grad, &residual, 0);
  for (size_t i = 0; i < grad.size(); ++i)
    ASSERT_EQ(residual[i], grad[i] + 0.25f);
}

TEST(TopK, KEqualsNSendsEverythingAndClearsResidual) {
  const auto grad = randomFloats(4097, 6);
  std::vector<float> residual(grad.size(), 1.0f);
  const Sparse s = encode(grad, &residual, grad.size());
  ASSERT_EQ(s.idx.size(), grad.size());
  for (size_t i = 0; i < grad.size(); ++i) {
    ASSERT_EQ(s.idx[i], static_cast<int32_t>(i));
    ASSERT_EQ(s.val[i], grad[i] + 1.0f);
    ASSERT_EQ(residual[i], 0.0f);
  }
}

TEST(TopK, KOnePicksLargestMagnitudeEvenIfNegative) {
  const std::vector<float> x = {1.0f, -5.0f, 4.0f, 4.999f};
  const Sparse s = encode(x, nullptr, 1);
  EXPECT_EQ(s.idx, std::vector<int32_t>{1});
  EXPECT_EQ(s.val, std::vector<float>{-5.0f});
}

TEST(TopK, TiesGoToLowerIndices) {
  // All equal: the first k indices, whatever the chunking.
  const std::vector<float> same(300001, 2.0f);
  for (const Parallel* par : {&serialParallel(), &defaultParallel()}) {
    const Sparse s = encode(same, nullptr, 1000, *par);
    std::vector<int32_t> expect(1000);
    std::iota(expect.begin(), expect.end(), 0);
    EXPECT_EQ(s.idx, expect);
  }
  // +3 and -3 tie; 7 beats both.
  const std::vector<float> x = {1.0f, 3.0f, -3.0f, 7.0f, 3.0f, -3.0f};
  EXPECT_EQ(encode(x, nullptr, 3).idx, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(encode(x, nullptr, 4).idx, (std::vector<int32_t>{1, 2, 3, 4}));
  // Ties spread over many chunks with a quota that ends mid-chunk.
  std::vector<float> y(1 << 18);
  for (size_t i = 0; i < y.size(); ++i)
    y[i] = (i % 3 == 0) ? 1.0f : 0.5f;
  for (size_t k : {size_t{10}, size_t{50000}, size_t{87382}}) {
    EXPECT_EQ(encode(y, nullptr, k, oddParallel()).idx, oracleIndices(y, k)) << k;
  }
}

TEST(TopK, NonFiniteRankFirstAndNeverStayInResidual) {
  std::vector<float> grad = {1.0f, kNaN, -kInf, 2.0f, kInf, 0.5f};
  // k = 2: NaN first, then the two infinities tie (lower index wins).
  {
    std::vector<float> residual(grad.size(), 0.0f);
    size_t nonFinite = 0;
    const Sparse s = encode(grad, &residual, 2, defaultParallel(), &nonFinite);
    EXPECT_EQ(nonFinite, 3u);
    EXPECT_EQ(s.idx, (std::vector<int32_t>{1, 2}));
    EXPECT_TRUE(std::isnan(s.val[0]));
    EXPECT_EQ(s.val[1], -kInf);
    // The unsent +inf is dropped from the residual; finite entries stay.
    EXPECT_EQ(residual, (std::vector<float>{1.0f, 0.0f, 0.0f, 2.0f, 0.0f, 0.5f}));
  }
  // k = 4: all non-finite entries and the largest finite one are sent.
  {
    std::vector<float> residual(grad.size(), 0.0f);
    EXPECT_EQ(encode(grad, &residual, 4).idx, (std::vector<int32_t>{1, 2, 3, 4}));
    EXPECT_EQ(residual, (std::vector<float>{1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.5f}));
  }
  // k = 0 with EF: the residual still drops them.
  {
    std::vector<float> residual(grad.size(), 0.0f);
    encode(grad, &residual, 0);
    EXPECT_EQ(residual, (std::vector<float>{1.0f, 0.0f, 0.0f, 2.0f, 0.0f, 0.5f}));
  }
}

TEST(TopK, ScaleIsAppliedBeforeSelection) {
  const std::vector<float> x = {1.0f, -4.0f, 2.0f};
  std::vector<float> residual = {0.0f, 0.0f, 3.0f};
  std::vector<int32_t> pairs(2);
  encodeTopK(x.data(), residual.data(), 3, 1, 0.5f, pairs.data());
  // a = {0.5, -2, 4}: index 2 (1 + 3) wins.
  EXPECT_EQ(pairs[0], 2);
  EXPECT_EQ(bitsToFloat(static_cast<uint32_t>(pairs[1])), 4.0f);
  EXPECT_EQ(residual, (std::vector<float>{0.5f, -2.0f, 0.0f}));
}

TEST(TopK, RejectsKAboveN) {
  std::vector<float> x(4, 1.0f);
  std::vector<int32_t> pairs(10);
  EXPECT_THROW(encodeTopK(x.data(), nullptr, 4, 5, 1.0f, pairs.data()), InvalidArgument);
}

TEST(TopK, CountRounding) {
  EXPECT_EQ(topkCount(0, 0.5), 0u);
  EXPECT_EQ(topkCount(100, 0.0), 0u);
  EXPECT_EQ(topkCount(100, 0.01), 1u);
  EXPECT_EQ(topkCount(10, 0.01), 1u);      // at least one
  EXPECT_EQ(topkCount(1000, 0.0015), 2u);  // 1.5 rounds half up
  EXPECT_EQ(topkCount(100, 0.07), 7u);
  EXPECT_EQ(topkCount(7, 1.0), 7u);
  EXPECT_THROW(topkCount(10, 1.5), InvalidArgument);
  EXPECT_THROW(topkCount(10, -0.1), InvalidArgument);
}

TEST(TopKDecode, ScatterAddsInPayloadOrder) {
  const float third = 1.0f / 3.0f;
  const std::vector<int32_t> pairs = {
      0, static_cast<int32_t>(bits(1.0f)), 2, static_cast<int32_t>(bits(third)),
      2, static_cast<int32_t>(bits(1e8f)), 2, static_cast<int32_t>(bits(-1e8f)),
      4, static_cast<int32_t>(bits(-2.0f))};
  std::vector<float> dense(5, 9.0f);
  decodeTopK(pairs.data(), 5, 5, 0.5f, dense.data(), /*accumulate=*/false);
  // ((0 + third*0.5) + 5e7) - 5e7, in that order, in fp32.
  float expect2 = 0.0f;
  expect2 += third * 0.5f;
  expect2 += 1e8f * 0.5f;
  expect2 += -1e8f * 0.5f;
  EXPECT_EQ(dense, (std::vector<float>{0.5f, 0.0f, expect2, 0.0f, -1.0f}));
  decodeTopK(pairs.data(), 1, 5, 1.0f, dense.data(), /*accumulate=*/true);
  EXPECT_EQ(dense[0], 1.5f);
}

TEST(TopKDecode, RejectsBadIndexWithoutWriting) {
  const std::vector<int32_t> pairs = {1, static_cast<int32_t>(bits(1.0f)), 5, 0};
  std::vector<float> dense(5, 3.0f);
  EXPECT_THROW(decodeTopK(pairs.data(), 2, 5, 1.0f, dense.data(), false), InvalidArgument);
  EXPECT_EQ(dense, std::vector<float>(5, 3.0f));
  const std::vector<int32_t> negative = {-1, 0};
  EXPECT_THROW(decodeTopK(negative.data(), 1, 5, 1.0f, dense.data(), true), InvalidArgument);
}

// ---------------------------------------------------------------- codec objects

TEST(Codec, TopKAcrossRanksEqualsSumOfSelections) {
  const size_t ranks = 3, n = 50021;
  auto codec = makeCodec("topk", CodecOptions{0.02, true});
  EXPECT_EQ(codec->collective(), Collective::kAllGather);
  const size_t k = topkCount(n, 0.02);
  ASSERT_EQ(codec->payloadBytes(n), 8 * k);
  std::vector<TensorState> states(ranks);
  for (int step = 0; step < 3; ++step) {
    std::vector<int32_t> gathered(ranks * 2 * k);
    std::vector<float> expect(n, 0.0f);
    for (size_t r = 0; r < ranks; ++r) {
      const auto grad = randomFloats(n, 1000 * step + r);
      std::vector<float> a(n);
      for (size_t i = 0; i < n; ++i) {
        a[i] = states[r].residual.empty() ? grad[i] : grad[i] + states[r].residual[i];
      }
      codec->encode(grad.data(), n, 1.0f, states[r], &gathered[r * 2 * k]);
      for (int32_t i : oracleIndices(a, k))
        expect[i] += a[i] * 0.5f;
    }
    std::vector<float> dense(n, -1.0f);
    codec->decode(gathered.data(), ranks, n, 0.5f, dense.data());
    for (size_t i = 0; i < n; ++i)
      ASSERT_EQ(bits(dense[i]), bits(expect[i])) << i;
  }
}

}  // namespace
}  // namespace compression
}  // namespace distx
