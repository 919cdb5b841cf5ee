// Hierarchical algorithms (Note [Hierarchical all-reduce]), their traffic:
// bytes per stage against the formulas (intra 2(g-1)/g·N, inter
// 2(n-1)/n·N/g per rank) from the local transport's per-peer counters, for
// the split-rail (direct and pipelined), the leaders path on uneven hosts,
// hierarchical broadcast and the node-ordered ring. Results:
// test_hierarchical.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <exception>
#include <numeric>
#include <string>
#include <thread>

#include "algorithms/algorithm.h"
#include "harness.h"

namespace distx::testing {
namespace {

// Bytes a rank sent to ranks on its own node and to other nodes.
struct Traffic {
  std::vector<uint64_t> intra, inter;
  std::vector<uint64_t> interMessages;
};

Traffic runAndCount(const Topology& topo,
                    const std::function<void(Rank&, CollectiveContext&)>& fn) {
  const int P = topo.size();
  auto fabric = std::make_shared<LocalFabric>(P);
  std::vector<std::unique_ptr<LocalTransport>> ts;
  for (int r = 0; r < P; ++r)
    ts.push_back(fabric->transport(r));
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(P);
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      try {
        Rank rk{r, P, *ts[r]};
        auto ctx = rk.ctx(1, std::chrono::seconds(30), 1 << 12);
        ctx.topology = &topo;
        fn(rk, ctx);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  Traffic out{std::vector<uint64_t>(P), std::vector<uint64_t>(P), std::vector<uint64_t>(P)};
  for (int r = 0; r < P; ++r) {
    for (int p = 0; p < P; ++p) {
      (topo.nodeOf(p) == topo.nodeOf(r) ? out.intra : out.inter)[r] += ts[r]->bytesSentTo(p);
      if (topo.nodeOf(p) != topo.nodeOf(r)) out.interMessages[r] += ts[r]->messagesSentTo(p);
    }
  }
  return out;
}

struct Grid {
  int n, g;
};

class SplitRailTraffic : public ::testing::TestWithParam<Grid> {};

TEST_P(SplitRailTraffic, BytesPerStageMatchTheFormulas) {
  const auto [n, g] = GetParam();
  std::vector<int> sizes(n, g);
  const Topology topo = Topology::fromNodeSizes(sizes);
  const int P = n * g;
  const size_t count = static_cast<size_t>(n * g) * 3000;  // g·n divides it
  const uint64_t N = count * sizeof(float);
  std::vector<std::vector<float>> bufs(P, std::vector<float>(count, 1.f));
  auto traffic = runAndCount(topo, [&](Rank& rk, CollectiveContext& ctx) {
    allreduceHierarchical(ctx, bufs[rk.rank].data(), count, DType::kFloat32, ReduceOp::kSum,
                          allreduceRing);  // a ring rail: the bandwidth formula
  });
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(traffic.intra[r], 2 * (g - 1) * N / g) << n << "x" << g << " rank " << r;
    EXPECT_EQ(traffic.inter[r], 2 * (n - 1) * (N / g) / n) << n << "x" << g << " rank " << r;
    EXPECT_EQ(bufs[r][count - 1], static_cast<float>(P));
  }
  // A node's link carries 2(n-1)/n·N, the flat ring's cut 2(P-1)/P·N per edge.
  for (int node = 0; node < n; ++node) {
    uint64_t link = 0;
    for (int r : topo.node(node))
      link += traffic.inter[r];
    EXPECT_EQ(link, 2 * (n - 1) * N / n);
  }
}

// Note [Pipelined split-rail]: the same bytes, piece by piece (12 pieces of
// 250·n floats per segment, so n divides every piece), and a rank's bytes to
// each rail peer are those of the direct rail.
TEST_P(SplitRailTraffic, PipelinedBytesMatchTheFormulas) {
  const auto [n, g] = GetParam();
  if (n == 1) GTEST_SKIP() << "one node: no rail";
  const Topology topo = Topology::fromNodeSizes(std::vector<int>(n, g));
  const int P = n * g;
  const size_t count = static_cast<size_t>(n * g) * 3000;
  const uint64_t N = count * sizeof(float);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    std::vector<std::vector<float>> bufs(P, std::vector<float>(count));
    for (int r = 0; r < P; ++r)
      for (size_t i = 0; i < count; ++i)
        bufs[r][i] = static_cast<float>((r * 7 + i) % 13);
    auto traffic = runAndCount(topo, [&](Rank& rk, CollectiveContext& ctx) {
      ctx.railPieceBytes = 1000 * n;
      allreduceHierarchical(ctx, bufs[rk.rank].data(), count, DType::kFloat32, op);
    });
    for (int r = 0; r < P; ++r) {
      EXPECT_EQ(traffic.intra[r], 2 * (g - 1) * N / g) << n << "x" << g << " rank " << r;
      EXPECT_EQ(traffic.inter[r], 2 * (n - 1) * (N / g) / n) << n << "x" << g << " rank " << r;
      // 12 pieces, each a direct reduce-scatter and all-gather: one message
      // to every rail peer per step (a ring rail would send chunk messages).
      EXPECT_EQ(traffic.interMessages[r], 12u * 2 * (n - 1)) << n << "x" << g << " rank " << r;
      for (size_t i = 0; i < count; i += 997) {
        double want = 0;
        for (int q = 0; q < P; ++q)
          want += (q * 7 + i) % 13;
        if (op == ReduceOp::kAvg) want /= P;
        ASSERT_NEAR(bufs[r][i], want, 1e-5 * want) << n << "x" << g << " rank " << r << " i " << i;
      }
      ASSERT_EQ(0, std::memcmp(bufs[r].data(), bufs[0].data(), N)) << "rank " << r << " differs";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grids, SplitRailTraffic,
                         ::testing::Values(Grid{1, 4}, Grid{2, 2}, Grid{2, 3}, Grid{3, 2},
                                           Grid{4, 2}),
                         [](const auto& info) {
                           return std::to_string(info.param.n) + "x" + std::to_string(info.param.g);
                         });

TEST(LeadersTraffic, OnlyLeadersCrossNodesOnUnevenHosts) {
  const Topology topo = Topology::fromNodeSizes({3, 1});
  const size_t count = 4096;
  const uint64_t N = count * sizeof(float);
  std::vector<std::vector<float>> bufs(4, std::vector<float>(count, 2.f));
  auto traffic = runAndCount(topo, [&](Rank& rk, CollectiveContext& ctx) {
    allreduceHierarchical(ctx, bufs[rk.rank].data(), count, DType::kFloat32, ReduceOp::kSum,
                          allreduceRing);  // uneven: runs the leaders path
  });
  EXPECT_EQ(traffic.inter[0], N);  // ring of 2 leaders: 2(n-1)/n·N
  EXPECT_EQ(traffic.inter[3], N);
  EXPECT_EQ(traffic.inter[1] + traffic.inter[2], 0u);
  // node 0 (3 ranks): tree reduce sends N per non-leader, tree broadcast N per edge (2 edges)
  EXPECT_EQ(traffic.intra[0] + traffic.intra[1] + traffic.intra[2], 2 * N + 2 * N);
  for (auto& b : bufs)
    EXPECT_EQ(b[17], 8.f);
}

TEST(HierarchicalBroadcast, OneCopyPerNodeCrossesTheLink) {
  // Interleaved 3 nodes x 2, root 3: the flat tree would cross more often.
  const Topology topo = Topology::fromKeys({0, 1, 2, 0, 1, 2});
  const size_t bytes = 10000;
  std::vector<std::vector<uint8_t>> bufs(6, std::vector<uint8_t>(bytes, 0));
  std::iota(bufs[3].begin(), bufs[3].end(), 0);
  auto traffic = runAndCount(topo, [&](Rank& rk, CollectiveContext& ctx) {
    broadcastHierarchical(ctx, bufs[rk.rank].data(), bytes, 3);
  });
  uint64_t inter = 0;
  for (int r = 0; r < 6; ++r)
    inter += traffic.inter[r];
  EXPECT_EQ(inter, 2 * bytes);  // nodes 1 and 2 receive one copy each
  for (auto& b : bufs)
    EXPECT_EQ(b, bufs[3]);
}

TEST(NodeOrderedRing, CrossesEachHostBoundaryOncePerStep) {
  const Topology topo = Topology::fromKeys({0, 1, 0, 1});  // the flat ring would cross 4 times
  const size_t block = 1000;
  std::vector<std::vector<uint8_t>> bufs(4, std::vector<uint8_t>(4 * block));
  auto traffic = runAndCount(topo, [&](Rank& rk, CollectiveContext& ctx) {
    std::vector<void*> blocks;
    for (int b = 0; b < 4; ++b)
      blocks.push_back(bufs[rk.rank].data() + b * block);
    allgatherRingNodeOrdered(ctx, blocks, block);
  });
  uint64_t inter = 0;
  for (int r = 0; r < 4; ++r)
    inter += traffic.inter[r];
  EXPECT_EQ(inter, 2 * 3 * block);  // 2 off-node edges, P-1 blocks each
}

}  // namespace
}  // namespace distx::testing
