// Ring all-reduce over 1-8 thread ranks: exact results for closed-form inputs,
// every dtype x op of the foundation matrix, and the ring's traffic formula.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "algorithms/algorithm.h"
#include "common/reduce.h"
#include "harness.h"
#include "values.h"

namespace distx::testing {
namespace {

// Inputs chosen so every partial result is exact in every dtype (|x| <= 256).
double input(ReduceOp op, int r, size_t i) {
  switch (op) {
    case ReduceOp::kProduct:
      return 1 + ((r + i) % 2);  // product <= 2^8
    case ReduceOp::kMin:
    case ReduceOp::kMax:
      return static_cast<double>((r * 3 + i) % 11) - 5;
    default:
      return (r + 1) * static_cast<double>(i % 7 + 1);  // sum <= 36 * 7
  }
}

double expected(ReduceOp op, DType dt, int P, size_t i) {
  double acc = input(op, 0, i);
  for (int r = 1; r < P; ++r) {
    const double x = input(op, r, i);
    switch (op) {
      case ReduceOp::kProduct:
        acc *= x;
        break;
      case ReduceOp::kMin:
        acc = std::min(acc, x);
        break;
      case ReduceOp::kMax:
        acc = std::max(acc, x);
        break;
      default:
        acc += x;
        break;
    }
  }
  if (op == ReduceOp::kAvg) {
    acc = isFloating(dt) ? acc / P : std::trunc(acc / P);
  }
  return roundTrip(dt, acc);
}

struct Case {
  DType dt;
  ReduceOp op;
};

std::vector<size_t> countsFor(int P) {
  return {0, 1, static_cast<size_t>(P > 1 ? P - 1 : 2), static_cast<size_t>(P + 1), 13, 1031};
}

void checkAllreduce(int P, size_t count, DType dt, ReduceOp op, size_t chunkBytes) {
  const size_t elem = dtypeSize(dt);
  std::vector<std::vector<uint8_t>> bufs(P, std::vector<uint8_t>(count * elem + 1));
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < count; ++i)
      put(dt, bufs[r].data(), i, input(op, r, i));
  }
  auto bytes = runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(7, std::chrono::seconds(30), chunkBytes);
    allreduceRing(ctx, bufs[rk.rank].data(), count, dt, op);
  });
  const double tol = (op == ReduceOp::kAvg && isFloating(dt)) ? 1e-6 : 0.0;
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < count; ++i) {
      const double want = expected(op, dt, P, i), got = get(dt, bufs[r].data(), i);
      ASSERT_NEAR(got, want, tol * std::abs(want))
          << "P=" << P << " count=" << count << " " << dtypeName(dt) << " " << reduceOpName(op)
          << " rank " << r << " index " << i;
    }
  }
  // Traffic: rank r sends every segment but (r+1) in reduce-scatter and every
  // segment but (r+2) in all-gather.
  const Segments seg{count, P};
  for (int r = 0; r < P; ++r) {
    const uint64_t want =
        P == 1 ? 0 : (2 * count - seg.size(mod(r + 1, P)) - seg.size(mod(r + 2, P))) * elem;
    EXPECT_EQ(bytes[r], want) << "bytes sent by rank " << r << " P=" << P << " count=" << count;
  }
}

class RingAllreduce : public ::testing::TestWithParam<int> {};

TEST_P(RingAllreduce, EveryDtypeAndOpExact) {
  const int P = GetParam();
  const DType dtypes[] = {DType::kFloat32,  DType::kFloat64, DType::kFloat16,
                          DType::kBFloat16, DType::kInt32,   DType::kInt64};
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax,
                          ReduceOp::kProduct};
  for (DType dt : dtypes) {
    for (ReduceOp op : ops) {
      for (size_t count : countsFor(P))
        checkAllreduce(P, count, dt, op, 64);  // many chunks
    }
  }
}

TEST_P(RingAllreduce, OverOneMillionElements) {
  const int P = GetParam();
  const size_t n = (1u << 20) + 7;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax})
    checkAllreduce(P, n, DType::kFloat32, op, 1 << 16);
  checkAllreduce(P, n, DType::kBFloat16, ReduceOp::kSum, 1 << 16);
  checkAllreduce(P, n, DType::kInt64, ReduceOp::kAvg, 1 << 16);
}

INSTANTIATE_TEST_SUITE_P(Ranks, RingAllreduce, ::testing::Range(1, 9),
                         [](const auto& info) { return "P" + std::to_string(info.param); });

TEST(RingAllreduceFailure, MissingRankTimesOutWithPeerInMessage) {
  auto fabric = std::make_shared<LocalFabric>(3);
  std::vector<float> buf(100, 1.f);
  auto t0 = Clock::now();
  try {
    runRanks(
        3,
        [&](Rank& rk) {
          if (rk.rank == 2) return;  // never joins
          std::vector<float> mine(buf);
          auto ctx = rk.ctx(1, std::chrono::milliseconds(300));
          allreduceRing(ctx, mine.data(), mine.size(), DType::kFloat32, ReduceOp::kSum);
        },
        fabric);
    FAIL() << "expected a timeout";
  } catch (const Timeout& e) {
    EXPECT_NE(std::string(e.what()).find("rank"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
}

TEST(RingAllreduceFailure, KilledPeerIsReported) {
  auto fabric = std::make_shared<LocalFabric>(2);
  fabric->kill(1);
  std::vector<float> buf(100, 1.f);
  auto transport = fabric->transport(0);
  Rank rk{0, 2, *transport};
  auto ctx = rk.ctx(1, std::chrono::seconds(10));
  try {
    allreduceRing(ctx, buf.data(), buf.size(), DType::kFloat32, ReduceOp::kSum);
    FAIL() << "expected a peer failure";
  } catch (const PeerFailure& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
}

TEST(Reduce, UnsupportedPairThrows) {
  float a = 1, b = 2;
  EXPECT_THROW(reduceInto(&a, &b, 1, DType::kFloat32, ReduceOp::kBXor), Unsupported);
}

}  // namespace
}  // namespace distx::testing
