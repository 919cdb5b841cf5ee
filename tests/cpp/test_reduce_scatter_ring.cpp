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
  std::vector<std::vector<uint8_t>> bufs;
  for (int r = 0; r < P; ++r)
    bufs.push_back(oracleBuffer(c.dt, c.op, r, P * block));
  auto bytes = runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(4, std::chrono::seconds(30), chunkBytes);
    reduceScatterRing(ctx, bufs[rk.rank].data(), block, c.dt, c.op);
  });
  const double tol = oracleTolerance(c.dt, c.op);
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < block; ++i) {
      const size_t g = r * block + i;
      const double want = oracleExpected(c.dt, c.op, P, g), got = get(c.dt, bufs[r].data(), g);
      ASSERT_NEAR(got, want, tol * std::abs(want))
          << "P=" << P << " block " << block << " " << c.name() << " rank " << r << " i=" << i;
    }
    EXPECT_EQ(bytes[r], (P - 1) * block * elem) << "bytes sent by rank " << r;
  }
}

class ReduceScatterRing : public RanksTest {};

TEST_P(ReduceScatterRing, EverySupportedDtypeAndOpExact) {
  const int P = ranks();
  const size_t blocks[] = {
      0, 1, static_cast<size_t>(P > 1 ? P - 1 : 2), static_cast<size_t>(P + 1), 13, 1031};
  for (const auto& c : supportedReduceCases()) {
    for (size_t block : blocks)
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
