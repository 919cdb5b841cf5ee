// Compressed all-reduces (algorithms/compressed.h) over 1-6 thread ranks:
// bit-identical results on every rank, equal to a single-threaded oracle built
// from the same codec kernels; the overflow and density fallbacks; error
// feedback across steps; the byte counters against the transport's count.
// Also the switch's parser (compression/config.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "algorithms/compressed.h"
#include "common/error.h"
#include "common/topology.h"
#include "compression/cast.h"
#include "compression/topk.h"
#include "harness.h"
#include "values.h"

namespace distx::testing {
namespace {

namespace cx = compression;

// gaussianInput(r, n, seed) for every rank r < P.
std::vector<std::vector<float>> inputsFor(int P, size_t n, uint32_t seed = 1) {
  std::vector<std::vector<float>> in;
  for (int r = 0; r < P; ++r)
    in.push_back(gaussianInput(r, n, seed));
  return in;
}

bool bitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The cast algorithm's result computed on one thread: each input cast once,
// summed in float32 in rank order, scaled, cast once.
std::vector<float> castOracle(cx::Method m, const std::vector<std::vector<float>>& xs, bool avg) {
  const auto& par = cx::serialParallel();
  const cx::CastKernels& cast = cx::castKernels(m);
  const size_t n = xs[0].size();
  std::vector<float> acc(n, 0.0f), dec(n);
  std::vector<uint16_t> enc(n);
  for (size_t q = 0; q < xs.size(); ++q) {
    cast.encode(xs[q].data(), enc.data(), n, 1.0f, par);
    cast.decode(enc.data(), dec.data(), n, 1.0f, par);
    for (size_t i = 0; i < n; ++i)
      acc[i] = q == 0 ? dec[i] : acc[i] + dec[i];
  }
  const float scale = avg ? 1.0f / static_cast<float>(xs.size()) : 1.0f;
  cast.encode(acc.data(), enc.data(), n, scale, par);
  cast.decode(enc.data(), dec.data(), n, 1.0f, par);
  return dec;
}

using Counters = std::vector<std::unique_ptr<CompressionCounters>>;

Counters countersFor(int P) {
  Counters counters;
  for (int r = 0; r < P; ++r)
    counters.push_back(std::make_unique<CompressionCounters>());
  return counters;
}

// Runs fn on every rank of topo with the context of the multi-node path:
// scratch, per-stage scratch and the topology.
void runOnTopology(const Topology& topo, const std::function<void(Rank&, CollectiveContext&)>& fn) {
  runRanks(topo.size(), [&](Rank& rk) {
    std::vector<uint8_t> scratch;
    std::vector<std::vector<uint8_t>> stages(tag::kMaxPhases);
    auto ctx = rk.ctx(1);
    ctx.scratch = &scratch;
    ctx.stageScratch = &stages;
    ctx.topology = &topo;
    fn(rk, ctx);
  });
}

struct Outcome {
  std::vector<std::vector<float>> out;
  std::vector<uint64_t> bytesSent;
  Counters counters;
};

Outcome runCompressed(int P, const std::vector<std::vector<float>>& in, const CompressSpec& spec,
                      ReduceOp op, std::vector<cx::TensorState>* states = nullptr, int steps = 1) {
  Outcome run;
  run.out = in;
  run.counters = countersFor(P);
  run.bytesSent = runRanks(P, [&](Rank& rk) {
    std::vector<uint8_t> scratch;
    for (int s = 0; s < steps; ++s) {
      auto ctx = rk.ctx(static_cast<uint32_t>(s + 1));
      ctx.scratch = &scratch;
      if (s > 0) run.out[rk.rank] = in[rk.rank];
      allreduceCompressed(ctx, run.out[rk.rank].data(), in[rk.rank].size(), op, spec,
                          states ? &(*states)[rk.rank] : nullptr, *run.counters[rk.rank]);
    }
  });
  return run;
}

class CastAllreduce : public ::testing::TestWithParam<std::tuple<int, cx::Method>> {};

TEST_P(CastAllreduce, BitIdenticalAndEqualsOracle) {
  const auto [P, method] = GetParam();
  for (size_t n :
       {size_t{0}, size_t{1}, size_t(P - 1), size_t(P + 1), size_t{1000}, size_t{4099}}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
      const auto in = inputsFor(P, n);
      CompressSpec spec;
      spec.method = method;
      const Outcome run = runCompressed(P, in, spec, op);
      const auto want = P == 1 ? in[0] : castOracle(method, in, op == ReduceOp::kAvg);
      for (int r = 0; r < P; ++r) {
        ASSERT_TRUE(bitEqual(run.out[r], want)) << "P=" << P << " n=" << n << " rank " << r;
        EXPECT_EQ(run.counters[r]->wireBytes.load(), run.bytesSent[r]) << "n=" << n;
        EXPECT_EQ(run.counters[r]->fallbackNonFinite.load(), 0u);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, CastAllreduce,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 6),
                                            ::testing::Values(cx::Method::kFp16,
                                                              cx::Method::kBf16)));

TEST(CompressedAllreduce, CastHalvesTheRingBytes) {
  const int P = 4;
  const size_t n = 1 << 16;
  const auto in = inputsFor(P, n);
  CompressSpec spec;
  spec.method = cx::Method::kFp16;
  const Outcome run = runCompressed(P, in, spec, ReduceOp::kSum);
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(run.bytesSent[r], 4u * (P - 1) * n / P);  // 2 stages x (P-1)/P·n x 2 bytes
    EXPECT_EQ(run.counters[r]->denseBytes.load(), 8u * (P - 1) * n / P);
  }
}

TEST(CompressedAllreduce, Fp16OverflowFallsBackToDenseOnEveryRank) {
  const int P = 3;
  const size_t n = 777;
  auto in = inputsFor(P, n);
  in[1][500] = 1.0e6f;  // beyond fp16's range
  CompressSpec spec;
  spec.method = cx::Method::kFp16;
  const Outcome run = runCompressed(P, in, spec, ReduceOp::kSum);
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(run.counters[r]->fallbackNonFinite.load(), 1u);
    ASSERT_TRUE(bitEqual(run.out[r], run.out[0]));
    for (size_t i = 0; i < n; ++i) {
      const double want = static_cast<double>(in[0][i]) + in[1][i] + in[2][i];
      ASSERT_NEAR(run.out[r][i], want, 1e-5 * (std::fabs(want) + 1)) << i;
    }
  }
  // bf16 has float32's range: no fallback, the large value survives.
  spec.method = cx::Method::kBf16;
  const Outcome bf = runCompressed(P, in, spec, ReduceOp::kSum);
  EXPECT_EQ(bf.counters[0]->fallbackNonFinite.load(), 0u);
  EXPECT_NEAR(bf.out[0][500], 1.0e6, 1.0e6 / 128);
}

TEST(CompressedAllreduce, NaNInputEndsAsDenseWould) {
  const int P = 2;
  std::vector<std::vector<float>> in = {gaussianInput(0, 100), gaussianInput(1, 100)};
  in[0][7] = std::numeric_limits<float>::quiet_NaN();
  CompressSpec spec;
  spec.method = cx::Method::kBf16;
  const Outcome run = runCompressed(P, in, spec, ReduceOp::kAvg);
  for (int r = 0; r < P; ++r) {
    EXPECT_TRUE(std::isnan(run.out[r][7]));
    EXPECT_FLOAT_EQ(run.out[r][8], (in[0][8] + in[1][8]) / 2);
    EXPECT_EQ(run.counters[r]->fallbackNonFinite.load(), 1u);
  }
}

// The top-k oracle: every rank's pairs (with its own residual), decoded in rank order.
std::vector<float> topkOracle(const std::vector<std::vector<float>>& xs,
                              std::vector<std::vector<float>>* residuals, double ratio, bool avg) {
  const size_t n = xs[0].size(), P = xs.size();
  const size_t k = cx::topkCount(n, ratio);
  std::vector<int32_t> pairs(2 * k * P);
  for (size_t q = 0; q < P; ++q) {
    float* res = residuals ? (*residuals)[q].data() : nullptr;
    cx::encodeTopK(xs[q].data(), res, n, k, 1.0f, pairs.data() + 2 * k * q, cx::serialParallel());
  }
  std::vector<float> out(n);
  cx::decodeTopK(pairs.data(), k * P, n, avg ? 1.0f / P : 1.0f, out.data(), false,
                 cx::serialParallel());
  return out;
}

TEST(CompressedAllreduce, TopKBitIdenticalWithErrorFeedbackOverSteps) {
  for (int P : {2, 3, 5}) {
    const size_t n = 20000;
    const auto in = inputsFor(P, n, 3);
    CompressSpec spec;
    spec.method = cx::Method::kTopK;
    spec.ratio = 0.01;
    const int steps = 3;
    std::vector<cx::TensorState> states(P);
    const Outcome run = runCompressed(P, in, spec, ReduceOp::kAvg, &states, steps);
    std::vector<std::vector<float>> residuals(P, std::vector<float>(n, 0.0f));
    std::vector<float> want;
    for (int s = 0; s < steps; ++s)
      want = topkOracle(in, &residuals, 0.01, true);
    for (int r = 0; r < P; ++r) {
      ASSERT_TRUE(bitEqual(run.out[r], want)) << "P=" << P << " rank " << r;
      ASSERT_TRUE(bitEqual(states[r].residual, residuals[r])) << "P=" << P << " rank " << r;
      EXPECT_EQ(run.counters[r]->wireBytes.load(), run.bytesSent[r]);
      EXPECT_EQ(run.bytesSent[r], steps * (P - 1) * 8u * cx::topkCount(n, 0.01));
    }
  }
}

TEST(CompressedAllreduce, TopKWithoutFeedbackAndResidualReset) {
  const int P = 2;
  std::vector<std::vector<float>> in = {gaussianInput(0, 5000), gaussianInput(1, 5000)};
  CompressSpec spec;
  spec.method = cx::Method::kTopK;
  spec.ratio = 0.02;
  spec.errorFeedback = false;
  std::vector<cx::TensorState> states(P);
  const Outcome run = runCompressed(P, in, spec, ReduceOp::kSum, &states);
  EXPECT_TRUE(bitEqual(run.out[0], topkOracle(in, nullptr, 0.02, false)));
  EXPECT_TRUE(states[0].residual.empty());
  // A residual of another size (a rebuilt bucket) starts again from zeros.
  spec.errorFeedback = true;
  for (auto& s : states)
    s.residual.assign(123, 5.0f);
  const Outcome again = runCompressed(P, in, spec, ReduceOp::kSum, &states);
  std::vector<std::vector<float>> zeros(P, std::vector<float>(5000, 0.0f));
  EXPECT_TRUE(bitEqual(again.out[1], topkOracle(in, &zeros, 0.02, false)));
  EXPECT_TRUE(bitEqual(states[1].residual, zeros[1]));
}

TEST(CompressedAllreduce, TopKDensityFallbackIsDenseAndFlushesResidual) {
  const int P = 4;
  const size_t n = 1000;
  const auto in = inputsFor(P, n);
  CompressSpec spec;
  spec.method = cx::Method::kTopK;
  spec.ratio = 0.25;  // k * P == n: dense
  std::vector<cx::TensorState> states(P);
  for (auto& s : states)
    s.residual.assign(n, 1.0f);
  const Outcome run = runCompressed(P, in, spec, ReduceOp::kSum, &states);
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(run.counters[r]->fallbackDensity.load(), 1u);
    ASSERT_TRUE(bitEqual(run.out[r], run.out[0]));
    EXPECT_EQ(states[r].residual, std::vector<float>(n, 0.0f));
    for (size_t i = 0; i < n; i += 97) {
      const double want = static_cast<double>(in[0][i]) + in[1][i] + in[2][i] + in[3][i] + 4;
      EXPECT_NEAR(run.out[r][i], want, 1e-4);
    }
  }
}

TEST(CompressedAllreduce, RejectsOtherOps) {
  std::vector<std::vector<float>> in = {gaussianInput(0, 10), gaussianInput(1, 10)};
  CompressSpec spec;
  spec.method = cx::Method::kFp16;
  EXPECT_THROW(runCompressed(2, in, spec, ReduceOp::kMax), InvalidArgument);
}

// Note [Compression switch]: across nodes only the inter-node stage is
// compressed; the intra-node stages stay exact and every rank ends identical.
TEST(CompressedAllreduce, HierarchicalCompressesOnlyTheInterNodeStage) {
  const size_t n = 10000;
  for (const std::vector<int>& sizes :
       {std::vector<int>{2, 2}, std::vector<int>{3, 3}, std::vector<int>{3, 1}}) {
    const Topology topo = Topology::fromNodeSizes(sizes);
    const int P = topo.size();
    for (cx::Method method : {cx::Method::kFp16, cx::Method::kBf16, cx::Method::kTopK}) {
      for (cx::Scope scope : {cx::Scope::kInter, cx::Scope::kAll}) {
        const auto in = inputsFor(P, n, 5);
        auto out = in;
        CompressSpec spec;
        spec.method = method;
        spec.ratio = 0.01;
        std::vector<cx::TensorState> states(P);
        const Counters counters = countersFor(P);
        runOnTopology(topo, [&](Rank& rk, CollectiveContext& ctx) {
          allreduceCompressedGroup(ctx, out[rk.rank].data(), n, ReduceOp::kSum, scope, spec,
                                   &states[rk.rank], *counters[rk.rank]);
        });
        const std::string what = topo.describe() + " " + cx::methodName(method) +
                                 (scope == cx::Scope::kAll ? " all" : " inter");
        for (int r = 0; r < P; ++r)
          ASSERT_TRUE(bitEqual(out[r], out[0])) << what << " rank " << r;
        const bool rail = scope == cx::Scope::kInter;
        const bool uniform = topo.uniform();
        const int g = topo.ranksPerNode(), nodes = topo.numNodes();
        for (int r = 0; r < P; ++r) {
          // Who ran a compressed stage: everyone on the flat path and on rails;
          // only the node leaders with uneven nodes.
          const bool ran = !rail || uniform || topo.localRank(r) == 0;
          EXPECT_EQ(counters[r]->calls.load(), ran ? 1u : 0u) << what << " rank " << r;
          if (rail && uniform) {
            const size_t shard = Segments{n, g}.size(topo.localRank(r));
            EXPECT_EQ(counters[r]->denseBytes.load(),
                      denseRingBytes(shard, 4, nodes, topo.nodeOf(r)))
                << what;
          }
        }
        if (method == cx::Method::kTopK) {
          size_t nonzero = 0;
          for (float v : out[0])
            nonzero += v != 0.0f;
          // Each compressed stage keeps 1 % of what it sees, summed over its ranks.
          const size_t bound =
              rail
                  ? (uniform ? static_cast<size_t>(g) * nodes * cx::topkCount((n + g - 1) / g, 0.01)
                             : nodes * cx::topkCount(n, 0.01))
                  : P * cx::topkCount(n, 0.01);
          EXPECT_LE(nonzero, bound) << what;
          EXPECT_GT(nonzero, 0u) << what;
        } else {
          const double tol = method == cx::Method::kFp16 ? 2e-3 : 2e-2;
          for (size_t i = 0; i < n; i += 13) {
            double want = 0;
            for (int r = 0; r < P; ++r)
              want += in[r][i];
            ASSERT_NEAR(out[0][i], want, tol * (4 + std::fabs(want)) * P) << what << " " << i;
          }
        }
      }
    }
  }
}

// Note [Pipelined split-rail], "With a cast": the switch's fp16/bf16 rail in
// pieces (4 KiB pieces here: 5 per segment at 2x2 and 3x2, 4 at 2x3). Every
// rank bit-identical; close to the exact sum; one direct message per rail
// peer per piece and step; the rail bytes half the dense ones; an fp16
// overflow redoes only its piece densely, on its rail only.
TEST(CompressedAllreduce, PipelinedCastRailPiecesAndOverflow) {
  const size_t n = 10000;
  for (const std::vector<int>& sizes :
       {std::vector<int>{2, 2}, std::vector<int>{3, 3}, std::vector<int>{2, 2, 2}}) {
    const Topology topo = Topology::fromNodeSizes(sizes);
    const int P = topo.size(), g = topo.ranksPerNode(), nodes = topo.numNodes();
    for (cx::Method method : {cx::Method::kFp16, cx::Method::kBf16}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
        for (bool overflow : {false, true}) {
          auto in = inputsFor(P, n, 9);
          if (overflow) in[1][4321] = 1.0e6f;  // beyond fp16's range (bf16 keeps it)
          auto out = in;
          CompressSpec spec;
          spec.method = method;
          const Counters counters = countersFor(P);
          std::vector<uint64_t> railMessages(P), railBytes(P);
          runOnTopology(topo, [&](Rank& rk, CollectiveContext& ctx) {
            ctx.railPieceBytes = 4096;
            allreduceCompressedGroup(ctx, out[rk.rank].data(), n, op, cx::Scope::kInter, spec,
                                     nullptr, *counters[rk.rank]);
            for (int p = 0; p < P; ++p) {
              if (topo.nodeOf(p) == topo.nodeOf(rk.rank)) continue;
              railMessages[rk.rank] += rk.transport.messagesSentTo(p);
              railBytes[rk.rank] += rk.transport.bytesSentTo(p);
            }
          });
          const std::string what = topo.describe() + " " + cx::methodName(method) +
                                   (op == ReduceOp::kAvg ? " avg" : " sum") +
                                   (overflow ? " overflow" : "");
          const bool redo = overflow && method == cx::Method::kFp16;
          // The rail of local rank l holds segment l of the vector (Segments{n, g}).
          const int hot = [&] {
            for (int l = 0; l < g; ++l)
              if (4321 < Segments{n, g}.offset(l) + Segments{n, g}.size(l)) return l;
            return g - 1;
          }();
          for (int r = 0; r < P; ++r) {
            ASSERT_TRUE(bitEqual(out[r], out[0])) << what << " rank " << r;
            const size_t shard = Segments{n, g}.size(topo.localRank(r));
            const uint64_t pieces = (Segments{n, g}.size(0) + 1023) / 1024;
            EXPECT_EQ(counters[r]->calls.load(), 1u) << what;
            EXPECT_EQ(counters[r]->denseBytes.load(),
                      denseRingBytes(shard, 4, nodes, topo.nodeOf(r)))
                << what;
            EXPECT_EQ(counters[r]->wireBytes.load(), railBytes[r]) << what << " rank " << r;
            const bool hotRail = topo.localRank(r) == hot;
            EXPECT_EQ(counters[r]->fallbackNonFinite.load(), redo && hotRail ? 1u : 0u)
                << what << " rank " << r;
            if (!(redo && hotRail)) {
              EXPECT_EQ(railMessages[r], pieces * 2 * (nodes - 1)) << what << " rank " << r;
              // 16-bit on the wire: half of the dense ring's bytes, up to
              // rounding of the sub-chunks.
              EXPECT_NEAR(static_cast<double>(railBytes[r]), counters[r]->denseBytes.load() / 2.0,
                          2.0 * pieces * nodes)
                  << what << " rank " << r;
            }
          }
          const double tol = method == cx::Method::kFp16 ? 2e-3 : 2e-2;
          for (size_t i = 0; i < n; ++i) {
            double want = 0;
            for (int r = 0; r < P; ++r)
              want += in[r][i];
            if (op == ReduceOp::kAvg) want /= P;
            if (redo && i == 4321) {
              ASSERT_NEAR(out[0][i], want, 1e-5 * std::fabs(want)) << what;  // redone densely
              continue;
            }
            if (overflow && i == 4321) {
              ASSERT_NEAR(out[0][i], want, std::fabs(want) / 64) << what;  // bf16 keeps it
              continue;
            }
            ASSERT_NEAR(out[0][i], want, tol * (4 + std::fabs(want)) * P) << what << " " << i;
          }
        }
      }
    }
  }
}

TEST(CompressionConfig, ParsesAndOptionsBeatEnvironment) {
  cx::Fields env, opt;
  EXPECT_FALSE(cx::resolve(opt, env).enabled());
  env.compress = "topk:0.01";
  env.minBytes = "1024";
  cx::Config c = cx::resolve(opt, env);
  EXPECT_EQ(c.method, cx::Method::kTopK);
  EXPECT_DOUBLE_EQ(c.ratio, 0.01);
  EXPECT_TRUE(c.errorFeedback);
  EXPECT_EQ(c.minBytes, 1024u);
  EXPECT_EQ(c.scope, cx::Scope::kInter);
  EXPECT_EQ(c.source, "DISTX_COMPRESS");
  opt.compress = "bf16";
  opt.scope = "all";
  opt.errorFeedback = "0";
  c = cx::resolve(opt, env);
  EXPECT_EQ(c.method, cx::Method::kBf16);
  EXPECT_EQ(c.scope, cx::Scope::kAll);
  EXPECT_FALSE(c.errorFeedback);
  EXPECT_EQ(c.minBytes, 1024u);
  EXPECT_EQ(c.source, "pg_options.compress");
  opt.compress = "none";
  EXPECT_FALSE(cx::resolve(opt, env).enabled());
}

TEST(CompressionConfig, BadValuesNameTheirSource) {
  auto message = [](const cx::Fields& opt, const cx::Fields& env) {
    try {
      cx::resolve(opt, env);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  cx::Fields env, opt;
  env.compress = "fp8";
  EXPECT_NE(message(opt, env).find("DISTX_COMPRESS must be one of"), std::string::npos);
  for (const char* bad : {"topk", "topk:", "topk:0", "topk:1.5", "topk:x", "topk:nan"}) {
    env.compress = bad;
    EXPECT_NE(message(opt, env).find("DISTX_COMPRESS"), std::string::npos) << bad;
  }
  env.compress = "fp16";
  env.minBytes = "-1";
  EXPECT_NE(message(opt, env).find("DISTX_COMPRESS_MIN_BYTES"), std::string::npos);
  env.minBytes.reset();
  opt.scope = "intra";
  EXPECT_NE(message(opt, env).find("pg_options.compress_scope"), std::string::npos);
  opt.scope.reset();
  env.errorFeedback = "maybe";
  EXPECT_NE(message(opt, env).find("DISTX_COMPRESS_EF"), std::string::npos);
  env.errorFeedback.reset();
  opt.logEvery = "ten";
  EXPECT_NE(message(opt, env).find("pg_options.compress_log_every"), std::string::npos);
}

}  // namespace
}  // namespace distx::testing
