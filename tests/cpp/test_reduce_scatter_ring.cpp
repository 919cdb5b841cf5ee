// Ring reduce-scatter over 1-8 thread ranks: every supported dtype x op exact
// in each rank's own block, counts 0, 1, P-1, P+1, prime and large, and the
// traffic formula ((P-1) blocks per rank).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "algorithms/algorithm.h"
#include "harness.h"
#include "reduce_oracle.h"

namespace distx::testing {
namespace {

void check(int P, size_t block, const ReduceCase& c, size_t chunkBytes) {
  const size_t elem = dtypeSize(c.dt);
  auto bufs = oracleBuffers(c, P, P * block);
  auto bytes = runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(4, std::chrono::seconds(30), chunkBytes);
    reduceScatterRing(ctx, bufs[rk.rank].data(), block, c.dt, c.op);
  });
  for (int r = 0; r < P; ++r) {
    ASSERT_NO_FATAL_FAILURE(expectReduced(c, P, r, bufs[r], r * block, block));  // its own block
    EXPECT_EQ(bytes[r], (P - 1) * block * elem) << "bytes sent by rank " << r;
  }
}

class ReduceScatterRing : public RanksTest {};

TEST_P(ReduceScatterRing, EverySupportedDtypeAndOpExact) {
  const int P = ranks();
  for (const auto& c : supportedReduceCases()) {
    for (size_t block : countsFor(P))
      check(P, block, c, 64);  // several chunks per block
  }
}

TEST_P(ReduceScatterRing, LargeBlocks) {
  const int P = ranks();
  check(P, 100003, {DType::kFloat32, ReduceOp::kSum}, 1 << 16);
  check(P, 100003, {DType::kBFloat16, ReduceOp::kAvg}, 4096);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ReduceScatterRing, bothProtocols(), ranksParamName);

}  // namespace
}  // namespace distx::testing
