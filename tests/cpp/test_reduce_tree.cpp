// Binomial-tree reduce over 1-8 thread ranks: every root, every supported
// dtype x op exact at the root, inputs of leaf ranks untouched, and the
// traffic formula (each non-root rank sends the vector exactly once).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "algorithms/algorithm.h"
#include "harness.h"
#include "reduce_oracle.h"

namespace distx::testing {
namespace {

void check(int P, int root, size_t count, const ReduceCase& c, size_t chunkBytes) {
  const size_t elem = dtypeSize(c.dt);
  auto bufs = oracleBuffers(c, P, count);
  const auto inputs = bufs;
  auto bytes = runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(2, std::chrono::seconds(30), chunkBytes);
    reduceTree(ctx, bufs[rk.rank].data(), count, c.dt, c.op, root);
  });
  ASSERT_NO_FATAL_FAILURE(expectReduced(c, P, root, bufs[root], 0, count)) << "root " << root;
  for (int r = 0; r < P; ++r) {
    // A leaf (odd distance from the root) only sends: its input is untouched.
    if (mod(r - root, P) % 2 == 1)
      ASSERT_EQ(bufs[r], inputs[r]) << "leaf rank " << r << " modified";
    EXPECT_EQ(bytes[r], r == root ? 0 : count * elem) << "bytes sent by rank " << r;
  }
}

class ReduceTree : public RanksTest {};

TEST_P(ReduceTree, EveryRootDtypeAndOpExact) {
  const int P = ranks();
  for (int root = 0; root < P; ++root) {
    for (const auto& c : supportedReduceCases()) {
      for (size_t count : countsFor(P))
        check(P, root, count, c, 64);  // several chunks
    }
  }
}

TEST_P(ReduceTree, LargeVectorManyChunks) {
  const int P = ranks();
  check(P, P / 2, 300007, {DType::kFloat32, ReduceOp::kSum}, 4096);
  check(P, P - 1, 300007, {DType::kInt64, ReduceOp::kMax}, 1 << 16);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ReduceTree, bothProtocols(), ranksParamName);

TEST(ReduceTreeFailure, BadRootIsInvalidArgument) {
  std::vector<float> v(4);
  EXPECT_THROW(runRanks(2,
                        [&](Rank& rk) {
                          auto ctx = rk.ctx(1);
                          std::vector<float> mine(v);
                          reduceTree(ctx, mine.data(), mine.size(), DType::kFloat32, ReduceOp::kSum,
                                     2);
                        }),
               InvalidArgument);
}

}  // namespace
}  // namespace distx::testing
