// The vector fp16 / bf16 reduction kernel is bit-identical to the scalar one:
// every one of the 65536 bit patterns (NaNs, infinities, subnormals, both
// zeros) as dst, each paired with 64 partners per op (a different stride of
// the pattern space each pass, plus special values against all 65536), for
// SUM, PRODUCT, MIN, MAX and the AVG division; odd lengths and offsets so
// the 8-lane blocks and the scalar tail both run.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/half.h"
#include "common/reduce.h"
#include "common/reduce_lowp.h"

namespace distx::lowp {
namespace {

using ReduceFn = void (*)(uint16_t*, const uint16_t*, size_t, ReduceOp, Kernel);
using DivideFn = void (*)(uint16_t*, size_t, int, Kernel);

struct Format {
  const char* name;
  ReduceFn reduce;
  DivideFn divide;
  std::vector<uint16_t> specials;
};

std::vector<Format> formats() {
  return {
      {"fp16",
       reduceHalf,
       divideHalf,
       {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x7bff, 0xfbff, 0x7c00,
        0xfc00, 0x7c01, 0x7e00, 0xfe01, 0x7fff}},
      {"bf16",
       reduceBf16,
       divideBf16,
       {0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x3f80, 0xbf80, 0x7f7f, 0xff7f, 0x7f80,
        0xff80, 0x7f81, 0x7fc0, 0xffc1, 0x7fff}},
  };
}

std::vector<uint16_t> allPatterns() {
  std::vector<uint16_t> v(65536);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<uint16_t>(i);
  return v;
}

void expectSame(const std::vector<uint16_t>& want, const std::vector<uint16_t>& got,
                const std::vector<uint16_t>& a, const std::vector<uint16_t>& b,
                const std::string& what) {
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] != got[i] && bad++ < 5) {
      ADD_FAILURE() << what << ": op(0x" << std::hex << a[i] << ", 0x" << b[i] << ") scalar 0x"
                    << want[i] << " vector 0x" << got[i];
    }
  }
  ASSERT_EQ(bad, 0u) << what << ": " << bad << " of " << want.size() << " lanes differ";
}

class LowpKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernelAvailable(Kernel::kAvx2))
      GTEST_SKIP() << "this CPU has no AVX2+F16C: only the scalar kernel runs";
  }
};

TEST_F(LowpKernels, EveryPatternPairwiseSampledBitIdentical) {
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kProduct, ReduceOp::kMin, ReduceOp::kMax};
  const auto a = allPatterns();
  for (const auto& f : formats()) {
    for (ReduceOp op : ops) {
      std::vector<std::vector<uint16_t>> partners;
      for (uint32_t pass = 0; pass < 64; ++pass) {  // b[i] = (i * odd + pass * 977) mod 2^16
        std::vector<uint16_t> b(a.size());
        const uint32_t odd = 2 * pass + 1 + 40503u * (pass % 3);
        for (uint32_t i = 0; i < b.size(); ++i)
          b[i] = static_cast<uint16_t>(i * (odd | 1) + pass * 977u);
        partners.push_back(std::move(b));
      }
      for (uint16_t s : f.specials)
        partners.emplace_back(a.size(), s);
      for (const auto& b : partners) {
        auto want = a, got = a;
        f.reduce(want.data(), b.data(), a.size(), op, Kernel::kScalar);
        f.reduce(got.data(), b.data(), a.size(), op, Kernel::kAvx2);
        expectSame(want, got, a, b, std::string(f.name) + " " + reduceOpName(op));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_F(LowpKernels, AvgDivisionBitIdentical) {
  const auto a = allPatterns();
  for (const auto& f : formats()) {
    for (int divisor : {1, 2, 3, 7, 8, 1000}) {
      auto want = a, got = a;
      f.divide(want.data(), want.size(), divisor, Kernel::kScalar);
      f.divide(got.data(), got.size(), divisor, Kernel::kAvx2);
      expectSame(want, got, a, a, std::string(f.name) + " AVG /" + std::to_string(divisor));
    }
  }
}

// Lengths 0..40 at offsets 0..3: blocks of 16 and 8, the scalar tail, and
// unaligned pointers; the elements past the end stay untouched.
TEST_F(LowpKernels, TailsAndOffsets) {
  for (const auto& f : formats()) {
    for (size_t off = 0; off < 4; ++off) {
      for (size_t n = 0; n <= 40; ++n) {
        std::vector<uint16_t> a(n + off + 4), b(n + off + 4);
        for (size_t i = 0; i < a.size(); ++i) {
          a[i] = static_cast<uint16_t>(0x3c00 + i * 37);
          b[i] = static_cast<uint16_t>(0x3800 + i * 53);
        }
        auto want = a, got = a;
        f.reduce(want.data() + off, b.data() + off, n, ReduceOp::kSum, Kernel::kScalar);
        f.reduce(got.data() + off, b.data() + off, n, ReduceOp::kSum, Kernel::kAvx2);
        ASSERT_EQ(want, got) << f.name << " n=" << n << " offset " << off;
        for (size_t i = off + n; i < a.size(); ++i)
          ASSERT_EQ(got[i], a[i]) << "wrote past the end";
      }
    }
  }
}

// reduceInto / finishAvg run the best kernel: same bits as the scalar one.
TEST(LowpDispatch, ReduceIntoUsesABitIdenticalKernel) {
  const auto a = allPatterns();
  auto b = a;
  std::reverse(b.begin(), b.end());
  for (auto [dt, fn] : {std::pair{DType::kFloat16, reduceHalf}, {DType::kBFloat16, reduceBf16}}) {
    auto want = a, got = a;
    fn(want.data(), b.data(), a.size(), ReduceOp::kSum, Kernel::kScalar);
    reduceInto(got.data(), b.data(), a.size(), dt, ReduceOp::kSum);
    EXPECT_EQ(want, got) << dtypeName(dt);
  }
  EXPECT_STRNE(kernelName(bestKernel()), "");
}

}  // namespace
}  // namespace distx::lowp
