// Ring all-reduce over 1-8 thread ranks, eager and rendezvous: exact results
// for closed-form inputs, every (dtype, op) pair reduceInto() supports
// (reduce_oracle.h), and the ring's traffic formula.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>
#include <string>

#include "algorithms/algorithm.h"
#include "common/reduce.h"
#include "harness.h"
#include "reduce_oracle.h"

namespace distx::testing {
namespace {

void checkAllreduce(int P, size_t count, const ReduceCase& c, size_t chunkBytes) {
  const size_t elem = dtypeSize(c.dt);
  auto bufs = oracleBuffers(c, P, count);
  auto bytes = runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(7, std::chrono::seconds(30), chunkBytes);
    allreduceRing(ctx, bufs[rk.rank].data(), count, c.dt, c.op);
  });
  ASSERT_NO_FATAL_FAILURE(expectAllreduced(c, bufs, count));
  // Traffic: rank r sends every segment but (r+1) in reduce-scatter and every
  // segment but (r+2) in all-gather.
  const Segments seg{count, P};
  for (int r = 0; r < P; ++r) {
    const uint64_t want =
        P == 1 ? 0 : (2 * count - seg.size(mod(r + 1, P)) - seg.size(mod(r + 2, P))) * elem;
    EXPECT_EQ(bytes[r], want) << "bytes sent by rank " << r << " P=" << P << " count=" << count;
  }
}

class RingAllreduce : public RanksTest {};

// Every (dtype, op) pair reduceInto() supports: the ring is the default
// above the small-message threshold for all of them.
TEST_P(RingAllreduce, EverySupportedDtypeAndOpExact) {
  const int P = ranks();
  for (const auto& c : supportedReduceCases()) {
    for (size_t count : countsFor(P))
      checkAllreduce(P, count, c, 64);  // many chunks
  }
}

TEST(RingAllreduceMatrix, CoversEveryDtypeAndBitwiseOp) {
  std::set<DType> dtypes;
  std::set<ReduceOp> ops;
  for (const auto& c : supportedReduceCases()) {
    dtypes.insert(c.dt);
    ops.insert(c.op);
  }
  EXPECT_EQ(dtypes.size(),
            12u);             // float32/64, fp16, bf16, int8/16/32/64, uint8, bool, complex64/128
  EXPECT_EQ(ops.size(), 8u);  // sum avg product min max band bor bxor
}

TEST_P(RingAllreduce, OverOneMillionElements) {
  const int P = ranks();
  const size_t n = (1u << 20) + 7;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax})
    checkAllreduce(P, n, {DType::kFloat32, op}, 1 << 16);
  checkAllreduce(P, n, {DType::kBFloat16, ReduceOp::kSum}, 1 << 16);
  checkAllreduce(P, n, {DType::kInt64, ReduceOp::kAvg}, 1 << 16);
}

INSTANTIATE_TEST_SUITE_P(Ranks, RingAllreduce, bothProtocols(), ranksParamName);

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
