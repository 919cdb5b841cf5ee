// Compression codecs (csrc/compression), the casts: fp16 and bf16 against
// common/half.h bit for bit, overflow and non-finite counts, thread-count
// independence, the cast codec objects. Top-k: test_codecs_topk.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "codec_testing.h"
#include "common/error.h"
#include "common/half.h"
#include "compression/cast.h"
#include "compression/codec.h"

namespace distx {
namespace compression {
namespace {

using namespace codec_testing;

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

// ---------------------------------------------------------------- codec objects

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
