// Tag layout round trip, half/bfloat16 conversions, dtype and op names, the
// settings table.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/dtype.h"
#include "common/env.h"
#include "common/error.h"
#include "common/half.h"
#include "common/settings.h"
#include "common/tag.h"
#include "compression/config.h"

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

// Note [Settings table]: a group setting from the environment or pg_options.
size_t chunkBytesOf(const std::map<std::string, std::string>& options) {
  return settings::parseBytes(settings::GroupInput(options).get("chunk_bytes"), 0, 4096, 1ull << 30,
                              false);
}

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

// The names and sizes every log line and error message uses, pinned for each
// enumerator (dtype.cpp keeps them in tables indexed by the enum value).
TEST(DType, NamesAndSizesOfEveryValue) {
  const std::vector<std::tuple<DType, const char*, size_t>> rows = {
      {DType::kFloat32, "float32", 4},     {DType::kFloat64, "float64", 8},
      {DType::kFloat16, "float16", 2},     {DType::kBFloat16, "bfloat16", 2},
      {DType::kInt8, "int8", 1},           {DType::kUInt8, "uint8", 1},
      {DType::kInt16, "int16", 2},         {DType::kInt32, "int32", 4},
      {DType::kInt64, "int64", 8},         {DType::kBool, "bool", 1},
      {DType::kComplex64, "complex64", 8}, {DType::kComplex128, "complex128", 16}};
  for (const auto& [dt, name, size] : rows) {
    EXPECT_STREQ(dtypeName(dt), name);
    EXPECT_EQ(dtypeSize(dt), size) << name;
  }
  EXPECT_STREQ(dtypeName(static_cast<DType>(12)), "?");
  EXPECT_EQ(dtypeSize(static_cast<DType>(12)), 0u);
  const std::vector<std::pair<ReduceOp, const char*>> ops = {
      {ReduceOp::kSum, "SUM"}, {ReduceOp::kAvg, "AVG"},  {ReduceOp::kProduct, "PRODUCT"},
      {ReduceOp::kMin, "MIN"}, {ReduceOp::kMax, "MAX"},  {ReduceOp::kBAnd, "BAND"},
      {ReduceOp::kBOr, "BOR"}, {ReduceOp::kBXor, "BXOR"}};
  for (const auto& [op, name] : ops)
    EXPECT_STREQ(reduceOpName(op), name);
  EXPECT_STREQ(reduceOpName(static_cast<ReduceOp>(8)), "?");
}

TEST(Settings, ChunkBytesIsValidated) {
  setenv("DISTX_CHUNK_BYTES", "12", 1);
  EXPECT_NE(errorOf([] {
              chunkBytesOf({});
            }).find("DISTX_CHUNK_BYTES must be 'auto' or an integer between 4096"),
            std::string::npos);
  setenv("DISTX_CHUNK_BYTES", "65536", 1);
  EXPECT_EQ(chunkBytesOf({}), 65536u);
  setenv("DISTX_CHUNK_BYTES", "auto", 1);
  EXPECT_EQ(chunkBytesOf({}), 0u);  // Note [Chunk size]
  unsetenv("DISTX_CHUNK_BYTES");
  EXPECT_EQ(chunkBytesOf({}), 0u);
}

TEST(Settings, OptionBeatsVariableAndIsNamedInErrors) {
  setenv("DISTX_CHUNK_BYTES", "65536", 1);
  EXPECT_EQ(chunkBytesOf({{"chunk_bytes", "8192"}}), 8192u);
  EXPECT_NE(errorOf([] {
              chunkBytesOf({{"chunk_bytes", "lots"}});
            }).find("pg_options.chunk_bytes must be"),
            std::string::npos);
  unsetenv("DISTX_CHUNK_BYTES");
  EXPECT_NE(errorOf([] {
              settings::GroupInput(std::map<std::string, std::string>{{"no_such_option", "1"}});
            }).find("unknown option 'no_such_option'"),
            std::string::npos);
  // piece_bytes takes 0 (stages one after the other); chunk_bytes does not.
  EXPECT_EQ(settings::parseBytes(
                settings::GroupInput(std::map<std::string, std::string>{{"piece_bytes", "0"}})
                    .get("piece_bytes"),
                7, 256, 1ull << 30, true),
            0u);
  EXPECT_FALSE(errorOf([] { chunkBytesOf({{"chunk_bytes", "0"}}); }).empty());
}

TEST(Settings, TableNamesEachOptionAndVariableOnce) {
  std::set<std::string> options, variables;
  for (const auto& s : settings::table()) {
    EXPECT_TRUE(variables.insert(s.variable).second) << s.variable;
    EXPECT_EQ(std::string(s.variable).rfind("DISTX_", 0), 0u) << s.variable;
    if (s.option) {
      EXPECT_TRUE(options.insert(s.option).second) << s.option;
      EXPECT_STREQ(settings::byOption(s.option).variable, s.variable);
    }
  }
  // Every compression field has its row (compression/config.h).
  for (const auto& [option, member] : compression::Fields::kByOption)
    EXPECT_TRUE(options.count(option)) << option;
}

}  // namespace
}  // namespace distx
