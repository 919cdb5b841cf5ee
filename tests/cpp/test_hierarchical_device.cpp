// The device-neutral hierarchical all-reduce (Note [Device kernels],
// allreduce_hierarchical_device.cpp): the CUDA path's multi-host schedule run
// with the CPU kernels and ring intra-node stages, ranks as threads. Dense:
// every (float32, float64, int32, bfloat16) x (SUM, AVG, MIN, MAX, PRODUCT)
// on 2x2, 2x3, 3x2 and 3x1, counts 0, 1, g-1, g+1, primes and large, against
// the oracle, bit-identical on every rank, in both rail modes (direct:
// scatter-reduce-gather in the kernels; staged: the flat rules on a host
// twin) and both protocols; staged, the same bytes as the CPU split-rail.
// Compressed rails (fp16, bf16, top-k with error feedback over steps, the
// non-finite and density fallbacks): the same bytes, counters and residuals
// as the CPU path's compressed split-rail, in both modes. Bytes per stage
// against the cost formula.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>

#include "algorithms/compressed.h"
#include "algorithms/hierarchical_device.h"
#include "compression/topk.h"
#include "harness.h"
#include "reduce_oracle.h"
#include "values.h"

namespace distx::testing {
namespace {

namespace cx = compression;

struct Shape {
  const char* name;
  std::vector<int> sizes;
};

const Shape kShapes[] = {{"2x2", {2, 2}}, {"2x3", {3, 3}}, {"3x2", {2, 2, 2}}, {"3x1", {1, 1, 1}}};

// The CUDA path's call with the CPU kernels: staged or direct rail.
void deviceAllreduce(CollectiveContext& ctx, bool staged, void* data, size_t count, DType dt,
                     ReduceOp op, const DeviceRail& rail = {}) {
  CpuKernelsOptions o;
  o.stage = staged;
  CpuKernels k(o);
  RingIntraNode intra(ctx);
  allreduceHierarchicalDevice(ctx, k, intra, data, count, dt, op, rail);
}

using Param = std::tuple<int, bool, LocalProtocol>;  // shape, staged, protocol

class HierarchicalDevice : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override { harnessProtocol() = std::get<2>(GetParam()); }
  void TearDown() override { harnessProtocol() = LocalProtocol::kEager; }
  const Shape& shape() const { return kShapes[std::get<0>(GetParam())]; }
  bool staged() const { return std::get<1>(GetParam()); }
};

TEST_P(HierarchicalDevice, DenseEveryDtypeAndOpMatchesOracle) {
  const Topology topo = Topology::fromNodeSizes(shape().sizes);
  const int P = topo.size(), g = topo.ranksPerNode();
  std::vector<ReduceCase> cases;
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kBFloat16})
    for (ReduceOp op :
         {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMin, ReduceOp::kMax, ReduceOp::kProduct})
      cases.push_back({dt, op});
  std::vector<size_t> counts = {0, 1, static_cast<size_t>(g + 1), 13, 1031, 20011};
  if (g > 1) counts.push_back(g - 1);
  // bufs[case][count][rank]
  std::vector<std::vector<std::vector<std::vector<uint8_t>>>> bufs(cases.size());
  for (size_t c = 0; c < cases.size(); ++c) {
    bufs[c].resize(counts.size());
    for (size_t j = 0; j < counts.size(); ++j)
      for (int r = 0; r < P; ++r)
        bufs[c][j].push_back(oracleBuffer(cases[c].dt, cases[c].op, r, counts[j]));
  }
  runRanks(P, [&](Rank& rk) {
    uint32_t seq = 1;
    for (size_t c = 0; c < cases.size(); ++c) {
      for (size_t j = 0; j < counts.size(); ++j) {
        auto ctx = rk.ctx(seq++, std::chrono::seconds(30), 256);  // many chunks
        ctx.topology = &topo;
        deviceAllreduce(ctx, staged(), bufs[c][j][rk.rank].data(), counts[j], cases[c].dt,
                        cases[c].op);
      }
    }
  });
  for (size_t c = 0; c < cases.size(); ++c) {
    const ReduceCase& rc = cases[c];
    const double tol = oracleTolerance(rc.dt, rc.op);
    for (size_t j = 0; j < counts.size(); ++j) {
      const size_t count = counts[j];
      for (int r = 0; r < P; ++r) {
        const auto& b = bufs[c][j][r];
        for (size_t i = 0; i < count; ++i) {
          const double want = oracleExpected(rc.dt, rc.op, P, i), got = get(rc.dt, b.data(), i);
          ASSERT_NEAR(got, want, tol * std::abs(want)) << shape().name << " count=" << count << " "
                                                       << rc.name() << " rank " << r << " i=" << i;
        }
        ASSERT_EQ(0, std::memcmp(b.data(), bufs[c][j][0].data(), count * dtypeSize(rc.dt)))
            << shape().name << ": ranks 0 and " << r << " differ, " << rc.name()
            << " count=" << count;
      }
    }
  }
}

// Staged, the rail is the CPU path's defaultRailAllreduce: with g | count the
// shards are the CPU split-rail's segments, so the bytes are the same, AVG
// and rounding included.
TEST_P(HierarchicalDevice, StagedEqualsTheCpuSplitRailBitForBit) {
  if (!staged()) GTEST_SKIP() << "direct: another rail algorithm";
  const Topology topo = Topology::fromNodeSizes(shape().sizes);
  const int P = topo.size(), g = topo.ranksPerNode();
  const size_t count = static_cast<size_t>(g) * 2053;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kProduct}) {
    std::vector<std::vector<float>> dev(P), cpu(P);
    for (int r = 0; r < P; ++r)
      dev[r] = cpu[r] = gaussianInput(r, count, 2);
    runRanks(P, [&](Rank& rk) {
      auto ctx = rk.ctx(1, std::chrono::seconds(30), 1024);
      ctx.topology = &topo;
      ctx.railPieceBytes = 0;  // the sequential split-rail
      allreduceHierarchical(ctx, cpu[rk.rank].data(), count, DType::kFloat32, op);
      ctx.seq = 2;
      deviceAllreduce(ctx, true, dev[rk.rank].data(), count, DType::kFloat32, op);
    });
    for (int r = 0; r < P; ++r)
      ASSERT_EQ(0, std::memcmp(dev[r].data(), cpu[r].data(), count * 4))
          << shape().name << " " << reduceOpName(op) << " rank " << r;
  }
}

struct CompressedOutcome {
  std::vector<std::vector<float>> out;
  std::vector<std::vector<float>> residuals;
  std::vector<uint64_t> wire, railBytes, calls, nonFinite, density;
};

// `steps` compressed all-reduces of `in` (restored each step) by the device
// schedule (device) or the CPU path's allreduceCompressedGroup (scope inter,
// sequential split-rail), every rank with its own residual and counters.
CompressedOutcome runCompressedSteps(const Topology& topo,
                                     const std::vector<std::vector<float>>& in,
                                     const CompressSpec& spec, ReduceOp op, bool device,
                                     bool staged, int steps) {
  const int P = topo.size();
  CompressedOutcome o;
  o.out = in;
  o.residuals.resize(P);
  o.wire.resize(P);
  o.railBytes.resize(P);
  o.calls.resize(P);
  o.nonFinite.resize(P);
  o.density.resize(P);
  runRanks(P, [&](Rank& rk) {
    const int r = rk.rank;
    CompressionCounters counters;
    cx::TensorState state;
    std::vector<uint8_t> scratch;
    std::vector<std::vector<uint8_t>> stages(tag::kMaxPhases);
    for (int s = 0; s < steps; ++s) {
      o.out[r] = in[r];
      auto ctx = rk.ctx(static_cast<uint32_t>(s + 1), std::chrono::seconds(30), 2048);
      ctx.topology = &topo;
      ctx.railPieceBytes = 0;
      ctx.scratch = &scratch;
      ctx.stageScratch = &stages;
      if (device) {
        DeviceRail rail{&spec, &counters, {}};
        if (spec.errorFeedback) {
          rail.residual = [&state](size_t n) {
            if (state.residual.size() != n) state.residual.assign(n, 0.0f);
            return state.residual.data();
          };
        }
        deviceAllreduce(ctx, staged, o.out[r].data(), in[r].size(), DType::kFloat32, op, rail);
      } else {
        allreduceCompressedGroup(ctx, o.out[r].data(), in[r].size(), op, cx::Scope::kInter, spec,
                                 &state, counters);
      }
    }
    for (int p = 0; p < P; ++p)
      if (topo.nodeOf(p) != topo.nodeOf(r)) o.railBytes[r] += rk.transport.bytesSentTo(p);
    o.residuals[r] = state.residual;
    o.wire[r] = counters.wireBytes.load();
    o.calls[r] = counters.calls.load();
    o.nonFinite[r] = counters.fallbackNonFinite.load();
    o.density[r] = counters.fallbackDensity.load();
  });
  return o;
}

struct CompressedCase {
  const char* name;
  cx::Method method;
  double ratio;
  int steps;
  bool overflow;  // one value beyond fp16's range
};

// The device schedule's compressed rails are the CPU path's compressed
// all-reduces (one implementation), on the same shards when g | count: the
// same output bytes, residuals and counters, staged or direct; every rank
// bit-identical; the rail bytes are what the counters say.
TEST_P(HierarchicalDevice, CompressedRailsEqualTheCpuPath) {
  const Topology topo = Topology::fromNodeSizes(shape().sizes);
  const int P = topo.size(), g = topo.ranksPerNode();
  const size_t count = static_cast<size_t>(g) * 3001;
  const CompressedCase cases[] = {{"fp16", cx::Method::kFp16, 0, 1, false},
                                  {"fp16 overflow", cx::Method::kFp16, 0, 1, true},
                                  {"bf16", cx::Method::kBf16, 0, 1, true},
                                  {"topk", cx::Method::kTopK, 0.01, 3, false},
                                  {"topk dense", cx::Method::kTopK, 0.5, 2, false}};
  for (const CompressedCase& c : cases) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
      std::vector<std::vector<float>> in(P);
      for (int r = 0; r < P; ++r)
        in[r] = gaussianInput(r, count, 4);
      if (c.overflow) in[P - 1][count / 2] = 1.0e6f;
      CompressSpec spec;
      spec.method = c.method;
      spec.ratio = c.ratio;
      const std::string what = std::string(shape().name) + " " + c.name + " " + reduceOpName(op);
      const auto cpu = runCompressedSteps(topo, in, spec, op, false, false, c.steps);
      const auto dev = runCompressedSteps(topo, in, spec, op, true, staged(), c.steps);
      // A fallback runs the dense rail: staged, the CPU path's flat rules;
      // direct, the scatter-reduce-gather, whose sums may round otherwise.
      bool fellBack = false;
      for (int r = 0; r < P; ++r)
        fellBack = fellBack || cpu.nonFinite[r] > 0 || cpu.density[r] > 0;
      // One rank per host: the CPU path runs the flat compressed all-reduce,
      // which folds AVG's 1/P into its codec; the device schedule divides
      // after the rail, as on every other shape.
      const bool flatAvg = topo.isFlat() && op == ReduceOp::kAvg;
      const bool exact = (staged() || !fellBack) && !flatAvg;
      const double tol = flatAvg && c.method != cx::Method::kTopK ? 1.6e-2 : 1e-5;
      for (int r = 0; r < P; ++r) {
        ASSERT_EQ(0, std::memcmp(dev.out[r].data(), dev.out[0].data(), count * 4))
            << what << " rank " << r;
        if (exact) {
          ASSERT_EQ(0, std::memcmp(dev.out[r].data(), cpu.out[r].data(), count * 4))
              << what << " rank " << r;
          EXPECT_EQ(dev.railBytes[r], cpu.railBytes[r]) << what << " rank " << r;
        } else {
          for (size_t i = 0; i < count; ++i)
            ASSERT_NEAR(dev.out[r][i], cpu.out[r][i], tol * (1 + std::fabs(cpu.out[r][i])))
                << what << " rank " << r << " i " << i;
        }
        EXPECT_EQ(dev.residuals[r], cpu.residuals[r]) << what << " rank " << r;
        EXPECT_EQ(dev.calls[r], static_cast<uint64_t>(c.steps)) << what;
        EXPECT_EQ(dev.wire[r], cpu.wire[r]) << what << " rank " << r;
        EXPECT_EQ(dev.nonFinite[r], cpu.nonFinite[r]) << what << " rank " << r;
        EXPECT_EQ(dev.density[r], cpu.density[r]) << what << " rank " << r;
        if (!fellBack) EXPECT_EQ(dev.wire[r], dev.railBytes[r]) << what;
      }
      if (c.method == cx::Method::kTopK && c.ratio > 0.1)
        EXPECT_EQ(dev.density[0], static_cast<uint64_t>(c.steps)) << what;
      const bool redo = c.overflow && c.method == cx::Method::kFp16;
      uint64_t redone = 0;
      for (int r = 0; r < P; ++r)
        redone += dev.nonFinite[r];
      EXPECT_EQ(redone > 0, redo && topo.numNodes() > 1) << what;
    }
  }
}

// top-k on bfloat16 data (the gate lets it through): the shard goes through a
// float32 copy; every rank ends bit-identical, close to the exact sum where
// every value is sent (ratio 1/N per rail: dense).
TEST_P(HierarchicalDevice, TopKOnBFloat16ThroughAFloat32Copy) {
  const Topology topo = Topology::fromNodeSizes(shape().sizes);
  const int P = topo.size();
  const size_t count = 999;
  std::vector<std::vector<uint8_t>> bufs(P);
  for (int r = 0; r < P; ++r)
    bufs[r] = oracleBuffer(DType::kBFloat16, ReduceOp::kSum, r, count);
  CompressSpec spec;
  spec.method = cx::Method::kTopK;
  spec.ratio = 1.0;
  runRanks(P, [&](Rank& rk) {
    CompressionCounters counters;
    auto ctx = rk.ctx(1);
    ctx.topology = &topo;
    deviceAllreduce(ctx, staged(), bufs[rk.rank].data(), count, DType::kBFloat16, ReduceOp::kSum,
                    DeviceRail{&spec, &counters, {}});
    if (topo.numNodes() > 1) EXPECT_EQ(counters.fallbackDensity.load(), 1u);
  });
  for (int r = 0; r < P; ++r) {
    ASSERT_EQ(0, std::memcmp(bufs[r].data(), bufs[0].data(), count * 2)) << "rank " << r;
    for (size_t i = 0; i < count; i += 7)
      ASSERT_EQ(get(DType::kBFloat16, bufs[r].data(), i),
                oracleExpected(DType::kBFloat16, ReduceOp::kSum, P, i))
          << i;
  }
}

// Bytes per stage against the header's cost: intra 2(g-1)/g·N (rings), inter
// 2(n-1)/n·N/g per rank, for the direct rail and for the staged ring rail
// (shards above the recursive-doubling limit); with an fp16 rail the inter
// bytes halve and equal counters.wireBytes.
TEST_P(HierarchicalDevice, BytesPerStageMatchTheCostFormula) {
  if (std::get<2>(GetParam()) != LocalProtocol::kEager) GTEST_SKIP() << "bytes: one protocol";
  const Topology topo = Topology::fromNodeSizes(shape().sizes);
  const int P = topo.size(), g = topo.ranksPerNode(), n = topo.numNodes();
  const size_t count = static_cast<size_t>(n * g) * 30000;  // n·g divides it; shards > 64 KiB
  const uint64_t N = count * sizeof(float);
  for (bool fp16 : {false, true}) {
    CompressSpec spec;
    spec.method = cx::Method::kFp16;
    std::vector<std::vector<float>> bufs(P, std::vector<float>(count, 1.f));
    std::vector<uint64_t> intra(P), inter(P), wire(P);
    runRanks(P, [&](Rank& rk) {
      CompressionCounters counters;
      auto ctx = rk.ctx(1, std::chrono::seconds(30), 1 << 16);
      ctx.topology = &topo;
      deviceAllreduce(ctx, staged(), bufs[rk.rank].data(), count, DType::kFloat32, ReduceOp::kSum,
                      fp16 ? DeviceRail{&spec, &counters, {}} : DeviceRail{});
      for (int p = 0; p < P; ++p)
        (topo.nodeOf(p) == topo.nodeOf(rk.rank) ? intra : inter)[rk.rank] +=
            rk.transport.bytesSentTo(p);
      wire[rk.rank] = counters.wireBytes.load();
    });
    for (int r = 0; r < P; ++r) {
      const std::string what = std::string(shape().name) + (fp16 ? " fp16" : " dense");
      EXPECT_EQ(intra[r], 2 * (g - 1) * N / g) << what << " rank " << r;
      EXPECT_EQ(inter[r], 2 * (n - 1) * (N / g) / n / (fp16 ? 2 : 1)) << what << " rank " << r;
      if (fp16) EXPECT_EQ(wire[r], inter[r]) << what;
      ASSERT_EQ(bufs[r][count - 1], static_cast<float>(P)) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, HierarchicalDevice,
    ::testing::Combine(::testing::Range(0, static_cast<int>(std::size(kShapes))), ::testing::Bool(),
                       ::testing::Values(LocalProtocol::kEager, LocalProtocol::kRendezvous)),
    [](const auto& info) {
      return std::string(kShapes[std::get<0>(info.param)].name) +
             (std::get<1>(info.param) ? "_staged_" : "_direct_") +
             localProtocolName(std::get<2>(info.param));
    });

TEST(CpuKernels, ArenaIsLentOnceAndComesBack) {
  std::vector<uint8_t> arena;
  CpuKernelsOptions o;
  o.arena = &arena;
  CpuKernels k(o);
  DeviceBuffer a = k.alloc(100);
  EXPECT_EQ(a.bytes(), arena.data());
  DeviceBuffer b = k.alloc(10);  // the arena is out: fresh memory
  EXPECT_NE(b.bytes(), arena.data());
  a.reset();
  DeviceBuffer c = k.alloc(50);
  EXPECT_EQ(c.bytes(), arena.data());
  EXPECT_GE(arena.size(), 100u);
}

TEST(CpuKernels, StagedWireIsAHostTwinDirectIsTheBuffer) {
  std::vector<float> dev = {1, 2, 3, 4};
  CpuKernels direct;
  WireBuffer d(direct, dev.data(), 16);
  EXPECT_EQ(d.wire(), reinterpret_cast<uint8_t*>(dev.data()));
  CpuKernelsOptions o;
  o.stage = true;
  CpuKernels staged(o);
  WireBuffer s(staged, dev.data(), 16);
  EXPECT_NE(s.wire(), reinterpret_cast<uint8_t*>(dev.data()));
  s.out(4, 8);  // elements 1 and 2
  float host[4];
  std::memcpy(host, s.wire(), 16);
  EXPECT_EQ(host[1], 2.f);
  EXPECT_EQ(host[2], 3.f);
  host[3] = 9.f;
  std::memcpy(s.wire(), host, 16);
  s.in(12, 4);
  EXPECT_EQ(dev[3], 9.f);
  EXPECT_EQ(dev[0], 1.f);
}

}  // namespace
}  // namespace distx::testing
