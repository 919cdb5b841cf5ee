// Hierarchical algorithms (Note [Hierarchical all-reduce]) with ranks as
// threads and hosts simulated by the topology: split-rail and
// reduce->leaders->broadcast against the oracle for every supported dtype x op
// on n x g in {1x4, 2x2, 2x3, 3x2, 4x2}, uneven 3+1 and interleaved hosts;
// bit-identical results on every rank; hierarchical broadcast, node-ordered
// rings, selection, a pluggable rail, a dead rank. Bytes per stage:
// test_hierarchical_traffic.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <tuple>

#include "algorithms/algorithm.h"
#include "algorithms/select.h"
#include "algorithms/shared_staging.h"
#include "harness.h"
#include "reduce_oracle.h"

namespace distx::testing {
namespace {

struct Shape {
  const char* name;
  Topology topo;
};

std::vector<Shape> shapes() {
  return {{"1x4", Topology::fromNodeSizes({4})},
          {"2x2", Topology::fromNodeSizes({2, 2})},
          {"2x3", Topology::fromNodeSizes({3, 3})},
          {"3x2", Topology::fromNodeSizes({2, 2, 2})},
          {"4x2", Topology::fromNodeSizes({2, 2, 2, 2})},
          {"uneven3+1", Topology::fromNodeSizes({3, 1})},
          {"interleaved2x2", Topology::fromKeys({0, 1, 0, 1})},
          {"uneven1+2+2", Topology::fromKeys({5, 6, 7, 6, 7})}};
}

using AllreduceUnderTest = std::function<void(CollectiveContext&, void*, size_t, DType, ReduceOp)>;

// Every supported case x count in one world (one thread spawn), seq per call.
// stagingSlot > 0: every rank has a shared staging with slots of that many
// bytes (Note [Shared staging]: the intra-node stages go through it), on
// every node or (stagingNodes) on the nodes whose bit is set. railPiece > 0:
// ctx.railPieceBytes (Note [Pipelined split-rail]: pieces of that many bytes).
void checkAll(const Shape& s, const AllreduceUnderTest& fn, const char* algo,
              size_t stagingSlot = 0, size_t railPiece = 0, unsigned stagingNodes = ~0u) {
  const int P = s.topo.size();
  std::vector<std::unique_ptr<SharedStaging>> staging(P);
  if (stagingSlot) {
    for (int r = 0; r < P; ++r) {
      if (stagingNodes >> s.topo.nodeOf(r) & 1)
        staging[r] = std::make_unique<SharedStaging>(stagingSlot);
    }
  }
  const auto cases = supportedReduceCases();
  const std::vector<size_t> counts = {0, 1, static_cast<size_t>(P + 1), 13, 1031};
  // bufs[case][count][rank]
  std::vector<std::vector<std::vector<std::vector<uint8_t>>>> bufs(cases.size());
  for (size_t k = 0; k < cases.size(); ++k) {
    bufs[k].resize(counts.size());
    for (size_t j = 0; j < counts.size(); ++j)
      for (int r = 0; r < P; ++r)
        bufs[k][j].push_back(oracleBuffer(cases[k].dt, cases[k].op, r, counts[j]));
  }
  std::vector<std::vector<std::vector<uint8_t>>> stage(P);
  runRanks(P, [&](Rank& rk) {
    stage[rk.rank].resize(tag::kMaxPhases);
    uint32_t seq = 1;
    for (size_t k = 0; k < cases.size(); ++k) {
      for (size_t j = 0; j < counts.size(); ++j) {
        auto ctx = rk.ctx(seq++, std::chrono::seconds(30), 64);  // many chunks
        ctx.topology = &s.topo;
        ctx.staging = staging[rk.rank].get();
        if (railPiece) ctx.railPieceBytes = railPiece;
        if (j % 2) ctx.stageScratch = &stage[rk.rank];
        fn(ctx, bufs[k][j][rk.rank].data(), counts[j], cases[k].dt, cases[k].op);
      }
    }
  });
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& c = cases[k];
    const double tol = oracleTolerance(c.dt, c.op);
    for (size_t j = 0; j < counts.size(); ++j) {
      const size_t count = counts[j];
      for (int r = 0; r < P; ++r) {
        const auto& b = bufs[k][j][r];
        for (size_t i = 0; i < count; ++i) {
          const double want = oracleExpected(c.dt, c.op, P, i), got = get(c.dt, b.data(), i);
          ASSERT_NEAR(got, want, tol * std::abs(want))
              << algo << " " << s.name << " count=" << count << " " << c.name() << " rank " << r
              << " i=" << i;
        }
        ASSERT_EQ(0, std::memcmp(b.data(), bufs[k][j][0].data(), count * dtypeSize(c.dt)))
            << algo << " " << s.name << ": ranks 0 and " << r << " differ, " << c.name()
            << " count=" << count;
      }
    }
  }
}

// A shape in one protocol of the local transport (eager, rendezvous).
class Hierarchical : public ::testing::TestWithParam<std::tuple<int, LocalProtocol>> {
 protected:
  void SetUp() override { harnessProtocol() = std::get<1>(GetParam()); }
  void TearDown() override { harnessProtocol() = LocalProtocol::kEager; }
  int shape() const { return std::get<0>(GetParam()); }
};

TEST_P(Hierarchical, SplitRailEveryDtypeAndOpMatchesOracle) {
  const Shape s = shapes()[shape()];
  checkAll(
      s,
      [](auto& ctx, void* d, size_t n, DType dt, ReduceOp op) {
        allreduceHierarchical(ctx, d, n, dt, op);
      },
      "split-rail");
}

// The intra-node stages through shared staging, 64-byte slots so that every
// count spans many blocks; one staging per rank serves every case in turn.
TEST_P(Hierarchical, SplitRailThroughSharedStagingMatchesOracle) {
  const Shape s = shapes()[shape()];
  checkAll(
      s,
      [](auto& ctx, void* d, size_t n, DType dt, ReduceOp op) {
        allreduceHierarchical(ctx, d, n, dt, op);
      },
      "split-rail (shm)", 64);
}

// Note [Pipelined split-rail]: pieces of 40 bytes (2 to 40 elements), so
// every count from 13 on runs many pieces, with partial and empty ones.
TEST_P(Hierarchical, PipelinedSplitRailMatchesOracle) {
  const Shape s = shapes()[shape()];
  checkAll(
      s,
      [](auto& ctx, void* d, size_t n, DType dt, ReduceOp op) {
        allreduceHierarchical(ctx, d, n, dt, op);
      },
      "pipelined split-rail (rings)", 0, 40);
}

// The same through shared staging: 64-byte slots, so a 160-byte piece spans
// several staging blocks and partial ones.
TEST_P(Hierarchical, PipelinedSplitRailThroughSharedStagingMatchesOracle) {
  const Shape s = shapes()[shape()];
  checkAll(
      s,
      [](auto& ctx, void* d, size_t n, DType dt, ReduceOp op) {
        allreduceHierarchical(ctx, d, n, dt, op);
      },
      "pipelined split-rail (shm)", 64, 160);
}

// Node 0 through shared staging, the other nodes through rings (a node that
// could not map the staging): the rail pieces are the same on both sides.
TEST_P(Hierarchical, PipelinedSplitRailMixedStagingMatchesOracle) {
  const Shape s = shapes()[shape()];
  checkAll(
      s,
      [](auto& ctx, void* d, size_t n, DType dt, ReduceOp op) {
        allreduceHierarchical(ctx, d, n, dt, op);
      },
      "pipelined split-rail (node 0 shm)", 64, 160, 1u);
}

TEST_P(Hierarchical, LeadersEveryDtypeAndOpMatchesOracle) {
  const Shape s = shapes()[shape()];
  checkAll(
      s,
      [](auto& ctx, void* d, size_t n, DType dt, ReduceOp op) {
        allreduceLeaders(ctx, d, n, dt, op);
      },
      "leaders");
}

TEST_P(Hierarchical, SelectedAlgorithmMatchesOracle) {
  const Shape s = shapes()[shape()];
  checkAll(
      s,
      [&](auto& ctx, void* d, size_t n, DType dt, ReduceOp op) {
        // force the large-message choice even for small test vectors
        selectAllreduce(n * dtypeSize(dt) + leadersMaxBytes() + 1, s.topo, "")
            .run(ctx, d, n, dt, op);
      },
      "selected");
}

TEST_P(Hierarchical, BroadcastFromEveryRoot) {
  const Shape s = shapes()[shape()];
  const int P = s.topo.size();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{1000}}) {
    for (int root = 0; root < P; ++root) {
      std::vector<std::vector<uint8_t>> bufs(P, std::vector<uint8_t>(bytes + 1, 0));
      for (size_t i = 0; i < bytes; ++i)
        bufs[root][i] = static_cast<uint8_t>(i * 7 + root);
      runRanks(P, [&](Rank& rk) {
        auto ctx = rk.ctx(1, std::chrono::seconds(30), 128);
        ctx.topology = &s.topo;
        broadcastHierarchical(ctx, bufs[rk.rank].data(), bytes, root);
      });
      for (int r = 0; r < P; ++r)
        ASSERT_EQ(bufs[r], bufs[root]) << s.name << " root " << root << " rank " << r;
    }
  }
}

TEST_P(Hierarchical, NodeOrderedRingsMatchFlatResults) {
  const Shape s = shapes()[shape()];
  const int P = s.topo.size();
  const size_t block = 37;
  std::vector<std::vector<int32_t>> ag(P, std::vector<int32_t>(P * block, -1));
  std::vector<std::vector<int32_t>> rs(P, std::vector<int32_t>(P * block));
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < block; ++i)
      ag[r][r * block + i] = static_cast<int32_t>(r * 1000 + i);
    for (size_t i = 0; i < P * block; ++i)
      rs[r][i] = static_cast<int32_t>(r + 1) * static_cast<int32_t>(i);
  }
  runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(1, std::chrono::seconds(30), 64);
    ctx.topology = &s.topo;
    std::vector<void*> blocks;
    for (int b = 0; b < P; ++b)
      blocks.push_back(ag[rk.rank].data() + b * block);
    allgatherRingNodeOrdered(ctx, blocks, block * sizeof(int32_t));
    auto ctx2 = rk.ctx(2, std::chrono::seconds(30), 64);
    ctx2.topology = &s.topo;
    reduceScatterRingNodeOrdered(ctx2, rs[rk.rank].data(), block, DType::kInt32, ReduceOp::kSum);
  });
  const int32_t ranksum = P * (P + 1) / 2;
  for (int r = 0; r < P; ++r) {
    for (int b = 0; b < P; ++b)
      for (size_t i = 0; i < block; ++i)
        ASSERT_EQ(ag[r][b * block + i], static_cast<int32_t>(b * 1000 + i))
            << s.name << " rank " << r;
    for (size_t i = 0; i < block; ++i)
      ASSERT_EQ(rs[r][r * block + i], ranksum * static_cast<int32_t>(r * block + i))
          << s.name << " rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Hierarchical,
                         ::testing::Combine(::testing::Range(0, 8),
                                            ::testing::Values(LocalProtocol::kEager,
                                                              LocalProtocol::kRendezvous)),
                         [](const auto& info) {
                           std::string n = shapes()[std::get<0>(info.param)].name;
                           for (auto& ch : n)
                             if (ch == '+') ch = '_';
                           return n + "_" + localProtocolName(std::get<1>(info.param));
                         });

TEST(HierarchicalRail, PluggableRailSeesOneRankPerNodeAndSum) {
  const Topology topo = Topology::fromNodeSizes({2, 2, 2});
  std::atomic<int> calls{0};
  std::vector<std::vector<double>> bufs(6, std::vector<double>(11));
  for (int r = 0; r < 6; ++r)
    std::iota(bufs[r].begin(), bufs[r].end(), r * 10.0);
  runRanks(6, [&](Rank& rk) {
    auto ctx = rk.ctx(1);
    ctx.topology = &topo;
    RailAllreduceFn rail = [&](CollectiveContext& rc, void* d, size_t n, DType dt, ReduceOp op) {
      EXPECT_EQ(rc.size(), 3);
      EXPECT_EQ(op, ReduceOp::kSum);  // AVG is finished outside the rail
      EXPECT_EQ(n, topo.localRank(rk.rank) == 0 ? 6u : 5u);
      ++calls;
      allreduceRing(rc, d, n, dt, op);
    };
    selectAllreduce(1 << 30, topo, "")
        .run(ctx, bufs[rk.rank].data(), 11, DType::kFloat64, ReduceOp::kAvg, rail);
  });
  EXPECT_EQ(calls.load(), 6);
  for (int r = 0; r < 6; ++r)
    for (size_t i = 0; i < 11; ++i)
      ASSERT_EQ(bufs[r][i], 25.0 + i);  // mean of r*10 + i over r = 0..5
}

TEST(Select, TopologyRules) {
  const Topology one = Topology::fromNodeSizes({4}), spread = Topology::fromNodeSizes({1, 1, 1});
  const Topology two = Topology::fromNodeSizes({2, 2}), uneven = Topology::fromNodeSizes({3, 1});
  const size_t big = 8 << 20, small = 1024;
  EXPECT_STREQ(selectAllreduce(big, one, "").name, "shm");  // Note [Shared staging]
  EXPECT_STREQ(selectAllreduce(small, one, "").name, "shm");
  EXPECT_STREQ(selectAllreduce(big, one, "ring").name, "ring");
  EXPECT_STREQ(selectAllreduce(small, one, "recursive_doubling").name, "recursive_doubling");
  EXPECT_STREQ(selectAllreduce(big, spread, "").name, "ring");
  EXPECT_STREQ(selectAllreduce(big, two, "").name, "hierarchical");
  EXPECT_TRUE(selectAllreduce(big, two, "").isHierarchical());
  EXPECT_STREQ(selectAllreduce(small, two, "").name, "leaders");
  EXPECT_STREQ(selectAllreduce(big, uneven, "").name, "leaders");
  EXPECT_STREQ(selectAllreduce(big, two, "ring").name, "ring");
  EXPECT_STREQ(selectAllreduce(small, one, "hierarchical").name, "hierarchical");
  EXPECT_THROW(selectAllreduce(small, two, "nope"), InvalidArgument);
  EXPECT_STREQ(selectBroadcast(big, two, "").name, "hierarchical");
  EXPECT_STREQ(selectBroadcast(big, one, "").name, "tree");
  EXPECT_STREQ(selectBroadcast(big, two, "ring").name, "tree");
  EXPECT_NE(describeSelection(one, "").find("one host"), std::string::npos);
  EXPECT_NE(describeSelection(spread, "").find("one rank per host"), std::string::npos);
  EXPECT_NE(describeSelection(uneven, "").find("leaders"), std::string::npos);
}

void deadRankCase(size_t railPieceBytes) {
  const Topology topo = Topology::fromNodeSizes({2, 2});
  auto fabric = std::make_shared<LocalFabric>(4);
  fabric->kill(3);
  std::vector<std::unique_ptr<LocalTransport>> ts;
  for (int r = 0; r < 4; ++r)
    ts.push_back(fabric->transport(r));
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      Rank rk{r, 4, *ts[r]};
      auto ctx = rk.ctx(1, std::chrono::milliseconds(800));
      ctx.topology = &topo;
      if (railPieceBytes) ctx.railPieceBytes = railPieceBytes;
      std::vector<float> buf(100000, 1.f);
      try {
        allreduceHierarchical(ctx, buf.data(), buf.size(), DType::kFloat32, ReduceOp::kSum);
      } catch (const Error& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  for (int r = 0; r < 3; ++r)
    EXPECT_FALSE(errors[r].empty()) << "rank " << r << " did not fail";
  // Rank 2 shares a node with the dead rank 3: its first stage names it.
  EXPECT_NE(errors[2].find("rank 3"), std::string::npos) << errors[2];
}

TEST(HierarchicalFailure, DeadRankFailsEveryoneNamingAGroupRank) {
  deadRankCase(0);
}

TEST(HierarchicalFailure, DeadRankFailsThePipelinedPathToo) {
  deadRankCase(4096);  // 25 pieces per segment (Note [Pipelined split-rail])
}

}  // namespace
}  // namespace distx::testing
