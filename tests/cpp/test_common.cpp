// Tag layout round trip, half/bfloat16 conversions, env validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "common/env.h"
#include "common/error.h"
#include "common/half.h"
#include "common/tag.h"

namespace distx {
namespace {

TEST(Tag, RoundTripsEveryField) {
  for (uint32_t pg : {0u, 5u, tag::kMaxGroups - 1}) {
    for (uint32_t seq : {0u, 1u, (1u << tag::kSeqBits) - 1}) {
      for (uint32_t phase : {0u, 1u, tag::kMaxPhases - 1}) {
        for (uint32_t src : {0u, 77u, 65535u}) {
          for (uint64_t slot : {0ull, 12345ull, (1ull << 22) - 1}) {
            const uint64_t t = tag::make(tag::Kind::kCollective, pg, seq, phase, src, slot);
            EXPECT_EQ(tag::pgOf(t), pg);
            EXPECT_EQ(tag::seqOf(t), seq);
            EXPECT_EQ(tag::phaseOf(t), phase);
            EXPECT_EQ(tag::srcOf(t), src);
            EXPECT_EQ(tag::slotOf(t), slot);
            EXPECT_EQ(tag::kindOf(t), tag::Kind::kCollective);
          }
        }
      }
    }
  }
}

TEST(Tag, P2PUserTagRoundTrips) {
  for (uint64_t u : {0ull, 1ull, (1ull << 22), (1ull << 35) + 5, (1ull << 36) - 1}) {
    const uint64_t t = tag::makeP2P(3, 9, u);
    EXPECT_EQ(tag::userTagOf(t), u);
    EXPECT_EQ(tag::srcOf(t), 9u);
    EXPECT_EQ(tag::pgOf(t), 3u);
    EXPECT_EQ(tag::kindOf(t), tag::Kind::kP2P);
  }
}

TEST(Tag, SeqWrapsWithoutTouchingOtherFields) {
  const uint64_t t = tag::make(tag::Kind::kCollective, 1, (1u << tag::kSeqBits) + 3, 2, 9, 4);
  EXPECT_EQ(tag::seqOf(t), 3u);
  EXPECT_EQ(tag::phaseOf(t), 2u);
  EXPECT_EQ(tag::srcOf(t), 9u);
}

TEST(Tag, P2PNeverEqualsCollective) {
  const uint64_t p = tag::makeP2P(0, 1, 0);
  const uint64_t c = tag::make(tag::Kind::kCollective, 0, 0, 1, 0);
  EXPECT_NE(p, c);
  EXPECT_EQ(p & tag::kAnySourceMask, tag::makeP2P(0, 7, 0) & tag::kAnySourceMask);
}

TEST(Half, KnownValuesRoundTrip) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(floatToHalf(65504.f), 0x7bff);
  EXPECT_EQ(floatToHalf(1e6f), 0x7c00);  // overflow -> inf
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.f, -24));
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(NAN))));
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.f, -11)), 0x3c00);  // tie -> even
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    ASSERT_EQ(floatToHalf(halfToFloat(static_cast<uint16_t>(h))), h) << h;
  }
}

TEST(BFloat16, KnownValuesRoundTrip) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16ToFloat(0x4049), 3.140625f);
  EXPECT_EQ(floatToBf16(1.0f + std::ldexp(1.f, -8)), 0x3f80);  // tie -> even
  for (uint32_t b = 0; b < 0x7f80; ++b) {
    ASSERT_EQ(floatToBf16(bf16ToFloat(static_cast<uint16_t>(b))), b) << b;
  }
}

TEST(Env, ChunkBytesIsValidated) {
  setenv("DISTX_CHUNK_BYTES", "12", 1);
  EXPECT_THROW(env::chunkBytes(), InvalidArgument);
  setenv("DISTX_CHUNK_BYTES", "65536", 1);
  EXPECT_EQ(env::chunkBytes(), 65536u);
  setenv("DISTX_CHUNK_BYTES", "auto", 1);
  EXPECT_EQ(env::chunkBytes(), 0u);  // Note [Chunk size]
  unsetenv("DISTX_CHUNK_BYTES");
  EXPECT_EQ(env::chunkBytes(), 0u);
}

}  // namespace
}  // namespace distx
