// Topology from host records (Note [Topology]) and narrowed contexts (Note
// [Narrowed context]): node maps, mismatched DISTX_HOSTID claims, the store
// exchange with ranks as threads, and flat algorithms run on subsets.
#include <gtest/gtest.h>

#include <cstdlib>
#include <numeric>

#include "algorithms/algorithm.h"
#include "common/topology.h"
#include "harness.h"
#include "memory_bootstrap.h"

namespace distx::testing {
namespace {

HostInfo host(uint64_t id, uint64_t boot, const char* name = "h") {
  HostInfo h;
  h.hostId = id;
  h.bootId = boot;
  h.hostname = name;
  return h;
}

TEST(Topology, FromNodeSizesUniform) {
  const Topology t = Topology::fromNodeSizes({2, 2});
  EXPECT_EQ(t.size(), 4);
  EXPECT_EQ(t.numNodes(), 2);
  EXPECT_TRUE(t.uniform());
  EXPECT_EQ(t.ranksPerNode(), 2);
  EXPECT_FALSE(t.isFlat());
  EXPECT_TRUE(t.contiguous());
  EXPECT_EQ(t.leaders(), (std::vector<int>{0, 2}));
  EXPECT_EQ(t.rail(1), (std::vector<int>{1, 3}));
  EXPECT_EQ(t.localRank(3), 1);
  EXPECT_EQ(t.nodeOf(2), 1);
  EXPECT_EQ(t.describe(), "2 nodes x 2 ranks [0,1] [2,3]");
}

TEST(Topology, UnevenAndInterleaved) {
  const Topology t = Topology::fromKeys({7, 9, 7, 7});  // ranks 0,2,3 on one host
  EXPECT_EQ(t.numNodes(), 2);
  EXPECT_FALSE(t.uniform());
  EXPECT_EQ(t.ranksPerNode(), 0);
  EXPECT_FALSE(t.contiguous());
  EXPECT_EQ(t.node(0), (std::vector<int>{0, 2, 3}));
  EXPECT_EQ(t.node(1), (std::vector<int>{1}));
  EXPECT_EQ(t.nodeOrder(), (std::vector<int>{0, 2, 3, 1}));
  EXPECT_EQ(t.localRank(3), 2);
  EXPECT_EQ(t.leaders(), (std::vector<int>{0, 1}));
  EXPECT_THROW(t.rail(1), InvalidArgument);
  EXPECT_EQ(t.describe(), "2 nodes, uneven (3+1) [0,2,3] [1]");
}

TEST(Topology, FlatCases) {
  EXPECT_TRUE(Topology::flat(4).isFlat());
  EXPECT_TRUE(Topology::fromNodeSizes({1, 1, 1}).isFlat());
  EXPECT_TRUE(Topology::fromNodeSizes({1}).isFlat());
  EXPECT_FALSE(Topology::fromNodeSizes({3, 1}).isFlat());
}

TEST(Topology, HostsWithOneBootIdMergeAndSplitByHostId) {
  std::vector<std::string> notes;
  // One machine (one boot id), two host ids (DISTX_HOSTID splitting it): fine.
  const Topology t = topologyFromHosts({host(1, 5), host(1, 5), host(2, 5), host(2, 5)}, &notes);
  EXPECT_EQ(t.describe(), "2 nodes x 2 ranks [0,1] [2,3]");
  EXPECT_TRUE(notes.empty());
}

TEST(Topology, OneHostIdOnTwoMachinesIsSplitAndNoted) {
  std::vector<std::string> notes;
  // Ranks 0-3 all claim host 1, but 2 and 3 booted another kernel.
  const Topology t = topologyFromHosts(
      {host(1, 5, "a"), host(1, 5, "a"), host(1, 6, "b"), host(1, 6, "b")}, &notes);
  EXPECT_EQ(t.describe(), "2 nodes x 2 ranks [0,1] [2,3]");
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("different machines"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("(b)"), std::string::npos) << notes[0];
}

TEST(Topology, UnevenHostsAreNoted) {
  std::vector<std::string> notes;
  const Topology t = topologyFromHosts({host(1, 5), host(1, 5), host(1, 5), host(2, 6)}, &notes);
  EXPECT_FALSE(t.uniform());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("leaders"), std::string::npos) << notes[0];
}

TEST(Topology, HostInfoRoundTripsAndRejectsGarbage) {
  HostInfo h = host(0xdeadbeefcafef00dull, 0x1234, "node-7 x");
  h.fromEnv = true;
  h.localWorldSize = 8;
  h.worldSize = 16;
  const HostInfo g = HostInfo::parse(h.serialize());
  EXPECT_EQ(g.hostId, h.hostId);
  EXPECT_EQ(g.bootId, h.bootId);
  EXPECT_TRUE(g.fromEnv);
  EXPECT_EQ(g.localWorldSize, 8);
  EXPECT_EQ(g.worldSize, 16);
  EXPECT_EQ(g.hostname, "node-7 x");
  EXPECT_THROW(HostInfo::parse("hello"), InvalidArgument);
  EXPECT_THROW(HostInfo::parse(""), InvalidArgument);
}

TEST(Topology, LocalHostIdIsPinnedForTheProcess) {
  const HostInfo a = localHostInfo();
  ::setenv("DISTX_HOSTID", "changed-between-groups", 1);
  const HostInfo b = localHostInfo();
  ::unsetenv("DISTX_HOSTID");
  EXPECT_EQ(a.hostId, b.hostId);
  EXPECT_EQ(a.fromEnv, b.fromEnv);
}

TEST(Topology, ExchangeGivesEveryRankTheSameMap) {
  MemoryBootstrap store;
  const int P = 5;
  std::vector<Topology> seen(P);
  runRanks(P, [&](Rank& rk) {
    HostInfo mine = host(rk.rank % 2 == 0 ? 11 : 22, 3, "h");  // interleaved hosts
    auto all = exchangeHostInfo(store, rk.rank, P, mine);
    seen[rk.rank] = topologyFromHosts(all, nullptr);
  });
  for (int r = 0; r < P; ++r)
    EXPECT_EQ(seen[r].describe(), "2 nodes, uneven (3+2) [0,2,4] [1,3]");
}

// Narrowed contexts: a flat ring all-reduce on each node of a 2x3 split, at
// the same time, with the same seq: only the subsets' own ranks contribute.
TEST(NarrowedContext, RingOnEveryNodeConcurrently) {
  const Topology topo = Topology::fromNodeSizes({3, 3});
  const int P = 6;
  std::vector<std::vector<float>> data(P, std::vector<float>(37));
  for (int r = 0; r < P; ++r)
    std::iota(data[r].begin(), data[r].end(), static_cast<float>(r * 100));
  auto bytes = runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(3);
    auto node = ctx.narrow(topo.node(topo.nodeOf(rk.rank)), 1);
    EXPECT_EQ(node.size(), 3);
    EXPECT_EQ(node.rank(), topo.localRank(rk.rank));
    allreduceRing(node, data[rk.rank].data(), 37, DType::kFloat32, ReduceOp::kSum);
    // then a rail (phase 2) with the same seq
    auto rail = ctx.narrow(topo.rail(topo.localRank(rk.rank)), 2);
    allreduceRecursiveDoubling(rail, data[rk.rank].data(), 37, DType::kFloat32, ReduceOp::kMax);
  });
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < 37; ++i) {
      // node sums: node 0 = 0+100+200 + 3i, node 1 = 300+400+500 + 3i; max = node 1
      ASSERT_EQ(data[r][i], 1200.f + 3 * i) << "rank " << r << " i " << i;
    }
  }
  (void)bytes;
}

// Note [Chunk size]: a subset on one host gets the local chunk, one that
// spans hosts keeps the context's; localChunkBytes = 0 (DISTX_CHUNK_BYTES
// set) keeps one size everywhere.
TEST(NarrowedContext, ChunkSizeFollowsTheHost) {
  auto fabric = std::make_shared<LocalFabric>(4);
  auto t0 = fabric->transport(0);
  Rank rk{0, 4, *t0};
  const Topology topo = Topology::fromNodeSizes({2, 2});
  auto ctx = rk.ctx(1);
  ctx.topology = &topo;
  ctx.chunkBytes = kNetChunkBytes;
  ctx.localChunkBytes = kLocalChunkBytes;
  EXPECT_EQ(ctx.narrow(topo.node(0), 1).chunkBytes, kLocalChunkBytes);
  EXPECT_EQ(ctx.narrow(topo.rail(0), 2).chunkBytes, kNetChunkBytes);
  EXPECT_EQ(ctx.narrow(topo.leaders(), 3).chunkBytes, kNetChunkBytes);
  ctx.localChunkBytes = 0;
  EXPECT_EQ(ctx.narrow(topo.node(0), 1).chunkBytes, kNetChunkBytes);
}

TEST(NarrowedContext, PermutedOrderAndErrorsNameGroupRanks) {
  auto fabric = std::make_shared<LocalFabric>(4);
  auto t0 = fabric->transport(0);
  Rank rk{0, 4, *t0};
  auto ctx = rk.ctx(1, std::chrono::milliseconds(100));
  EXPECT_THROW(ctx.narrow({1, 2}, 1), InvalidArgument);  // rank 0 not in it
  EXPECT_THROW(ctx.narrow({0, 1}, 0), InvalidArgument);  // phase 0 is the flat one
  EXPECT_THROW(ctx.narrow({0, 1}, 8), InvalidArgument);  // past the tag field
  EXPECT_THROW(ctx.narrow({0, 9}, 1), InvalidArgument);  // no such rank
  auto sub = ctx.narrow({3, 0}, 1);
  EXPECT_EQ(sub.rank(), 1);
  EXPECT_EQ(sub.groupRank(0), 3);
  auto nested = sub.narrow({1, 0}, 2);  // ranks of `sub`: group ranks 0 and 3
  EXPECT_EQ(nested.members, (std::vector<int>{0, 3}));
  float x = 1;
  try {
    allreduceRing(sub, &x, 1, DType::kFloat32, ReduceOp::kSum);  // rank 3 never comes
    FAIL() << "expected a timeout";
  } catch (const Timeout& e) {
    EXPECT_NE(std::string(e.what()).find("rank 3"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace distx::testing
