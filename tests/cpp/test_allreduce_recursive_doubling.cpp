// Recursive-doubling all-reduce over 1-8 thread ranks (powers of two and not):
// exact results for every supported dtype x op, bit-identical results on every
// rank, the traffic formula, and the size rule in select.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "algorithms/algorithm.h"
#include "algorithms/select.h"
#include "harness.h"
#include "reduce_oracle.h"

namespace distx::testing {
namespace {

// Bytes rank r sends for an n-byte vector on P ranks (see the file's cost note).
uint64_t expectedBytes(int P, int r, uint64_t n) {
  int p2 = 1, rounds = 0;
  while (p2 * 2 <= P) {
    p2 *= 2;
    ++rounds;
  }
  const int rem = P - p2;
  if (r >= p2) return n;                    // folded: sends its vector once
  return n * (rounds + (r < rem ? 1 : 0));  // + the result for its folded partner
}

void check(int P, size_t count, const ReduceCase& c, bool withScratch) {
  const size_t elem = dtypeSize(c.dt);
  auto bufs = oracleBuffers(c, P, count);
  std::vector<std::vector<uint8_t>> scratch(P);
  auto bytes = runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(5);
    if (withScratch) ctx.scratch = &scratch[rk.rank];
    allreduceRecursiveDoubling(ctx, bufs[rk.rank].data(), count, c.dt, c.op);
  });
  ASSERT_NO_FATAL_FAILURE(expectAllreduced(c, bufs, count));
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(bytes[r], P == 1 || count == 0 ? 0 : expectedBytes(P, r, count * elem))
        << "bytes sent by rank " << r << " P=" << P << " count=" << count;
  }
}

class RecursiveDoubling : public RanksTest {};

TEST_P(RecursiveDoubling, EverySupportedDtypeAndOpExact) {
  const int P = ranks();
  for (const auto& c : supportedReduceCases()) {
    for (size_t count : countsFor(P))
      check(P, count, c, /*withScratch=*/count % 2 == 1);
  }
}

TEST_P(RecursiveDoubling, RandomFloatsAreBitIdenticalOnEveryRank) {
  const int P = ranks();
  const size_t n = 4099;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kProduct}) {
    std::vector<std::vector<float>> bufs(P, std::vector<float>(n));
    std::mt19937 gen(P * 100 + static_cast<int>(op));
    std::uniform_real_distribution<float> dist(-3.f, 3.f);
    for (auto& b : bufs) {
      for (auto& x : b)
        x = dist(gen);
    }
    // NaN in some ranks' inputs: MIN/MAX keep or drop it depending on operand
    // order, so ranks agree only if every pair combines in the same order.
    for (int r = 0; r < P; r += 2)
      bufs[r][r] = std::numeric_limits<float>::quiet_NaN();
    runRanks(P, [&](Rank& rk) {
      auto ctx = rk.ctx(1);
      allreduceRecursiveDoubling(ctx, bufs[rk.rank].data(), n, DType::kFloat32, op);
    });
    for (int r = 1; r < P; ++r) {
      ASSERT_EQ(0, std::memcmp(bufs[r].data(), bufs[0].data(), n * sizeof(float)))
          << "P=" << P << " op " << reduceOpName(op) << ": rank " << r << " differs from rank 0";
    }
  }
}

TEST_P(RecursiveDoubling, LargeVectorMatchesRing) {
  const int P = ranks();
  const size_t n = 100003;
  std::vector<std::vector<double>> a(P, std::vector<double>(n)), b;
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < n; ++i)
      a[r][i] = static_cast<double>((r * 7 + i) % 1000);
  }
  b = a;
  runRanks(P, [&](Rank& rk) {
    auto c1 = rk.ctx(1);
    allreduceRecursiveDoubling(c1, a[rk.rank].data(), n, DType::kFloat64, ReduceOp::kSum);
    auto c2 = rk.ctx(2);
    allreduceRing(c2, b[rk.rank].data(), n, DType::kFloat64, ReduceOp::kSum);
  });
  for (int r = 0; r < P; ++r)
    ASSERT_EQ(a[r], b[r]) << "P=" << P << " rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Ranks, RecursiveDoubling, bothProtocols(), ranksParamName);

TEST(RecursiveDoublingFailure, MissingRankTimesOutNamingThePeer) {
  try {
    runRanks(2, [&](Rank& rk) {
      if (rk.rank == 1) return;
      std::vector<float> v(10, 1.f);
      auto ctx = rk.ctx(1, std::chrono::milliseconds(300));
      allreduceRecursiveDoubling(ctx, v.data(), v.size(), DType::kFloat32, ReduceOp::kSum);
    });
    FAIL() << "expected a timeout";
  } catch (const Timeout& e) {
    EXPECT_NE(std::string(e.what()).find("recv from rank 1"), std::string::npos) << e.what();
  }
}

TEST(SelectAllreduce, SmallGoesToRecursiveDoublingLargeToRing) {
  for (int P : {2, 3, 4, 8, 64}) {
    const size_t limit = recursiveDoublingMaxBytes(P);
    EXPECT_GT(limit, 0u);
    EXPECT_STREQ(selectAllreduce(0, P, "").name, "recursive_doubling");
    EXPECT_STREQ(selectAllreduce(limit, P, "").name, "recursive_doubling");
    EXPECT_STREQ(selectAllreduce(limit + 1, P, "").name, "ring");
    EXPECT_STREQ(selectAllreduce(size_t(1) << 30, P, "").name, "ring");
  }
  EXPECT_GE(recursiveDoublingMaxBytes(2), recursiveDoublingMaxBytes(8));
}

TEST(SelectAllreduce, DistxAlgoForcesEitherAlgorithm) {
  EXPECT_STREQ(selectAllreduce(16, 4, "ring").name, "ring");
  EXPECT_EQ(selectAllreduce(16, 4, "ring").fn, &allreduceRing);
  EXPECT_STREQ(selectAllreduce(size_t(1) << 30, 4, "recursive_doubling").name,
               "recursive_doubling");
  EXPECT_EQ(selectAllreduce(size_t(1) << 30, 4, "recursive_doubling").fn,
            &allreduceRecursiveDoubling);
  try {
    selectAllreduce(16, 4, "tree");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("recursive_doubling"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace distx::testing
