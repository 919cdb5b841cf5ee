// Compression codecs (csrc/compression): casts against common/half.h, top-k
// against a full-sort oracle, the error-feedback invariant bit for bit, k = 0,
// 1, n, ties, NaN/Inf, and thread-count independence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "compression/cast.h"
#include "compression/codec.h"
#include "compression/topk.h"

namespace distx {
namespace compression {
namespace {

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// A pool with a thread count the chunking does not divide evenly.
Parallel oddParallel() {
  Parallel p = defaultParallel();
  p.threads = 7;
  return p;
}

std::vector<float> randomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v)
    x = dist(gen);
  return v;
}

// Bit patterns over the whole float range (NaNs excluded), plus edge values.
std::vector<float> castInputs() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          65504.0f,
                          65519.0f,
                          65520.0f,
                          -65520.0f,
                          6.0e-8f,
                          2.9e-8f,
                          3.0e-8f,
                          1e-30f,
                          -1e-45f,
                          kInf,
                          -kInf,
                          3.38e38f,
                          3.3895e38f,
                          3.3896e38f,
                          std::numeric_limits<float>::max()};
  std::mt19937 gen(7);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = gen();
    float f = bitsToFloat(u);
    if (!std::isnan(f)) v.push_back(f);
  }
  return v;
}

uint32_t bits(float f) {
  return floatToBits(f);
}

// ---------------------------------------------------------------- casts

TEST(Fp16Codec, MatchesScalarConversionBitForBit) {
  const auto in = castInputs();
  for (float scale : {1.0f, 0.25f, 1.0f / 3.0f}) {
    std::vector<uint16_t> out(in.size());
    encodeFp16(in.data(), out.data(), in.size(), scale);
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(out[i], floatToHalf(in[i] * scale)) << "x=" << in[i] << " scale=" << scale;
    }
    std::vector<float> back(in.size());
    decodeFp16(out.data(), back.data(), out.size(), scale);
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(bits(back[i]), bits(halfToFloat(out[i]) * scale)) << i;
    }
  }
}

TEST(Fp16Codec, RoundTripIsExactForRepresentableValues) {
  std::vector<float> in;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) != 0x7c00) in.push_back(halfToFloat(static_cast<uint16_t>(h)));
  }
  std::vector<uint16_t> payload(in.size());
  std::vector<float> out(in.size());
  EXPECT_EQ(encodeFp16(in.data(), payload.data(), in.size(), 1.0f), 0u);
  decodeFp16(payload.data(), out.data(), in.size(), 1.0f);
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(bits(out[i]), bits(in[i])) << i;
}

TEST(Fp16Codec, CountsOverflowNotInputInfinities) {
  const std::vector<float> in = {65504.0f, 65519.0f, 65520.0f, -70000.0f, kInf,
                                 -kInf,    kNaN,     1.0f,     1e38f};
  std::vector<uint16_t> out(in.size());
  // 65520, -70000 and 1e38 overflow; inf and NaN inputs are not overflow.
  EXPECT_EQ(encodeFp16(in.data(), out.data(), in.size(), 1.0f), 3u);
  EXPECT_EQ(out[1], 0x7bff);  // 65519 rounds down to 65504
  EXPECT_EQ(out[2], 0x7c00);
  EXPECT_EQ(out[3], 0xfc00);
  EXPECT_EQ(out[6] & 0x7c00, 0x7c00);
  EXPECT_NE(out[6] & 0x3ff, 0);  // NaN stays NaN
  // Pre-scaling by 1/4 brings 65520 and -70000 back in range.
  EXPECT_EQ(encodeFp16(in.data(), out.data(), in.size(), 0.25f), 1u);
  // Scaling up makes finite values overflow.
  const float one = 1.0f;
  uint16_t h;
  EXPECT_EQ(encodeFp16(&one, &h, 1, 1e5f), 1u);
}

// The vector loops only note that some lane neared the limit and then recount;
// check their counts on long inputs with overflow, infinities and NaNs spread
// through whole vectors (castInputs' random bit patterns), and on clean ones.
TEST(CastCodecs, OverflowCountsMatchScalarOnLongInputs) {
  auto in = castInputs();
  in.push_back(kNaN);
  for (float scale : {1.0f, 0.25f, 1e-20f}) {
    size_t expectFp16 = 0, expectBf16 = 0;
    for (float x : in) {
      const bool finite = std::isfinite(x);
      expectFp16 += finite && (floatToHalf(x * scale) & 0x7fff) == 0x7c00;
      expectBf16 += finite && (floatToBf16(x * scale) & 0x7fff) == 0x7f80;
    }
    std::vector<uint16_t> out(in.size());
    EXPECT_EQ(encodeFp16(in.data(), out.data(), in.size(), scale), expectFp16) << scale;
    EXPECT_EQ(encodeBf16(in.data(), out.data(), in.size(), scale), expectBf16) << scale;
  }
  const auto clean = randomFloats(100000, 9);
  std::vector<uint16_t> out(clean.size());
  EXPECT_EQ(encodeFp16(clean.data(), out.data(), clean.size(), 1.0f), 0u);
  EXPECT_EQ(encodeBf16(clean.data(), out.data(), clean.size(), 1.0f), 0u);
}

TEST(Bf16Codec, MatchesScalarConversionBitForBit) {
  const auto in = castInputs();
  for (float scale : {1.0f, 0.5f, 0.1f}) {
    std::vector<uint16_t> out(in.size());
    encodeBf16(in.data(), out.data(), in.size(), scale);
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_EQ(out[i], floatToBf16(in[i] * scale)) << "x=" << in[i];
    }
    std::vector<float> back(in.size());
    decodeBf16(out.data(), back.data(), out.size(), 1.0f);
    for (size_t i = 0; i < in.size(); ++i)
      ASSERT_EQ(bits(back[i]), bits(bf16ToFloat(out[i])));
  }
}

TEST(Bf16Codec, OverflowAndNaN) {
  const std::vector<float> in = {3.38e38f, std::numeric_limits<float>::max(), kInf, kNaN, -kNaN};
  std::vector<uint16_t> out(in.size());
  EXPECT_EQ(encodeBf16(in.data(), out.data(), in.size(), 1.0f), 1u);  // FLT_MAX rounds to inf
  EXPECT_EQ(out[1], 0x7f80);
  EXPECT_EQ(out[2], 0x7f80);
  EXPECT_TRUE(std::isnan(bf16ToFloat(out[3])));
  EXPECT_TRUE(std::isnan(bf16ToFloat(out[4])));
}

TEST(CastCodecs, ResultsDoNotDependOnThreads) {
  const auto in = randomFloats((1 << 20) + 13, 3, 100.0f);
  std::vector<uint16_t> a(in.size()), b(in.size()), c(in.size());
  encodeFp16(in.data(), a.data(), in.size(), 0.5f, serialParallel());
  encodeFp16(in.data(), b.data(), in.size(), 0.5f, oddParallel());
  EXPECT_EQ(a, b);
  encodeBf16(in.data(), a.data(), in.size(), 0.5f, serialParallel());
  encodeBf16(in.data(), c.data(), in.size(), 0.5f, oddParallel());
  EXPECT_EQ(a, c);
}

TEST(CastCodecs, CountNonFiniteCodes) {
  std::vector<uint16_t> h(100003, floatToHalf(1.0f)), b(100003, floatToBf16(1.0f));
  for (size_t i : {size_t{0}, size_t{17}, size_t{65536}, size_t{100002}}) {
    h[i] = floatToHalf(i % 2 ? kInf : kNaN);
    b[i] = floatToBf16(i % 2 ? -kInf : kNaN);
  }
  h[5] = floatToHalf(65504.0f);  // largest finite: not counted
  b[5] = floatToBf16(3.38e38f);
  EXPECT_EQ(countNonFiniteFp16(h.data(), h.size(), oddParallel()), 4u);
  EXPECT_EQ(countNonFiniteBf16(b.data(), b.size(), oddParallel()), 4u);
  EXPECT_EQ(countNonFiniteFp16(h.data(), 0), 0u);
}

TEST(CastCodecs, EmptyInput) {
  EXPECT_EQ(encodeFp16(nullptr, nullptr, 0, 1.0f), 0u);
  EXPECT_EQ(encodeBf16(nullptr, nullptr, 0, 1.0f), 0u);
  decodeFp16(nullptr, nullptr, 0, 1.0f);
  decodeBf16(nullptr, nullptr, 0, 1.0f);
}

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

TEST(Codec, CastsRoundTripAndReportOverflow) {
  for (const char* name : {"fp16", "bf16"}) {
    auto codec = makeCodec(name);
    EXPECT_EQ(codec->collective(), Collective::kAllReduce);
    const std::vector<float> x = {1.0f, -2.5f, 0.125f, 1e6f};
    std::vector<uint16_t> payload(x.size());
    ASSERT_EQ(codec->payloadBytes(x.size()), 2 * x.size());
    TensorState state;
    const EncodeStats stats = codec->encode(x.data(), x.size(), 1.0f, state, payload.data());
    EXPECT_EQ(stats.overflow, std::string(name) == "fp16" ? 1u : 0u) << name;
    std::vector<float> out(x.size());
    codec->decode(payload.data(), 1, x.size(), 2.0f, out.data());
    EXPECT_EQ(out[0], 2.0f);
    EXPECT_EQ(out[1], -5.0f);
    EXPECT_EQ(out[2], 0.25f);
    EXPECT_TRUE(state.residual.empty());
  }
  EXPECT_THROW(makeCodec("int8"), InvalidArgument);
  EXPECT_THROW(makeCodec("topk", CodecOptions{2.0, true}), InvalidArgument);
}

}  // namespace
}  // namespace compression
}  // namespace distx
