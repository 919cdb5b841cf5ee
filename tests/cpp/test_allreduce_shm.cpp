// The one-host all-reduce through shared staging (Note [Shared staging]) over
// 2-5 thread ranks: exact results for every (dtype, op) pair against the
// closed-form oracle, identical bytes on every rank, consecutive calls on one
// staging, no bulk data through the transport, the ring where the group is
// not on one host, and a missing or dead peer reported by name, after which
// the staging refuses further calls instead of mixing blocks.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>

#include "algorithms/algorithm.h"
#include "algorithms/shared_staging.h"
#include "common/reduce.h"
#include "harness.h"
#include "reduce_oracle.h"

namespace distx::testing {
namespace {

using Stagings = std::vector<std::unique_ptr<SharedStaging>>;

Stagings makeStagings(int P, size_t slotBytes) {
  Stagings s;
  for (int r = 0; r < P; ++r)
    s.push_back(std::make_unique<SharedStaging>(slotBytes));
  return s;
}

// Rank r's context for the shm path: the topology and r's staging.
CollectiveContext shmContext(Rank& rk, uint32_t seq, const Topology& topo, Stagings& st,
                             std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto ctx = rk.ctx(seq, timeout);
  ctx.topology = &topo;
  ctx.staging = st[rk.rank].get();
  return ctx;
}

// Runs one shm all-reduce of bufs on P ranks; returns the bytes each sent.
std::vector<uint64_t> runShm(int P, RankBuffers& bufs, size_t count, DType dt, ReduceOp op,
                             Stagings& st, const Topology& topo, uint32_t seq,
                             std::shared_ptr<LocalFabric> fabric = nullptr) {
  return runRanks(
      P,
      [&](Rank& rk) {
        auto ctx = shmContext(rk, seq, topo, st);
        allreduceShm(ctx, bufs[rk.rank].data(), count, dt, op);
      },
      fabric);
}

// The failure tests' world: P ranks on one host, 256-byte slots, one fabric
// for every call, and `count` floats per rank, each equal to `value`.
struct ShmWorld {
  ShmWorld(int p, size_t count, float value)
      : P(p),
        topo(Topology::fromNodeSizes({p})),
        st(makeStagings(p, 256)),
        fabric(std::make_shared<LocalFabric>(p)),
        data(p, std::vector<float>(count, value)) {}

  // A float SUM all-reduce of data on every rank.
  void sumAll(uint32_t seq) {
    runRanks(
        P,
        [&](Rank& rk) {
          auto ctx = shmContext(rk, seq, topo, st);
          allreduceShm(ctx, data[rk.rank].data(), data[rk.rank].size(), DType::kFloat32,
                       ReduceOp::kSum);
        },
        fabric);
  }

  // The same on rank r alone, on this thread (its peers are gone or absent).
  void sumOn(int r, uint32_t seq, std::chrono::milliseconds timeout) {
    auto t = fabric->transport(r);
    Rank rk{r, P, *t};
    auto ctx = shmContext(rk, seq, topo, st, timeout);
    allreduceShm(ctx, data[r].data(), data[r].size(), DType::kFloat32, ReduceOp::kSum);
  }

  const int P;
  const Topology topo;
  Stagings st;
  std::shared_ptr<LocalFabric> fabric;
  std::vector<std::vector<float>> data;
};

class ShmAllreduce : public ::testing::TestWithParam<int> {};

// Small slots (256 B), so every count spans many blocks, partial last blocks
// and empty sub-chunks; one staging per rank serves every case in turn.
TEST_P(ShmAllreduce, EverySupportedDtypeAndOpExact) {
  const int P = GetParam();
  const Topology topo = Topology::fromNodeSizes({P});
  auto st = makeStagings(P, 256);
  uint32_t seq = 1;
  for (const auto& c : supportedReduceCases()) {
    for (size_t count : {size_t(1), size_t(P + 1), size_t(13), size_t(1031), size_t(5000)}) {
      auto bufs = oracleBuffers(c, P, count);
      const auto sent = runShm(P, bufs, count, c.dt, c.op, st, topo, seq++);
      expectAllreduced(c, bufs, count);
      // Only the set-up messages (first call) go through the transport.
      for (int r = 0; r < P; ++r)
        EXPECT_LE(sent[r], 2u * 64 * (P - 1)) << "rank " << r << " sent bulk data";
    }
  }
  for (int r = 1; r < P; ++r)
    EXPECT_EQ(st[r]->blocks(), st[0]->blocks());
  EXPECT_GT(st[0]->blocks(), 100u);
}

TEST_P(ShmAllreduce, LargeTensorDefaultSlots) {
  const int P = GetParam();
  const Topology topo = Topology::fromNodeSizes({P});
  auto st = makeStagings(P, SharedStaging::kDefaultSlotBytes);
  const size_t n = (3u << 20) + 7;
  uint32_t seq = 1;
  for (const ReduceCase c :
       {ReduceCase{DType::kFloat32, ReduceOp::kSum}, ReduceCase{DType::kBFloat16, ReduceOp::kAvg},
        ReduceCase{DType::kInt64, ReduceOp::kMax}}) {
    auto bufs = oracleBuffers(c, P, n);
    runShm(P, bufs, n, c.dt, c.op, st, topo, seq++);
    expectAllreduced(c, bufs, n);
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, ShmAllreduce, ::testing::Values(2, 3, 4, 5),
                         [](const auto& info) { return "P" + std::to_string(info.param); });

// Not one host (or no staging): the ring, with its traffic, and the staging
// is never set up.
TEST(ShmAllreduceFallback, RingOffOneHostOrWithoutStaging) {
  const int P = 4;
  const size_t count = 1031;
  const ReduceCase c{DType::kFloat32, ReduceOp::kSum};
  const Topology two = Topology::fromNodeSizes({2, 2});
  auto st = makeStagings(P, 256);
  auto bufs = oracleBuffers(c, P, count);
  const auto sent = runShm(P, bufs, count, c.dt, c.op, st, two, 1);
  expectAllreduced(c, bufs, count);
  for (int r = 0; r < P; ++r) {
    EXPECT_GT(sent[r], count * 4 / 2) << "rank " << r << ": the ring should have sent the data";
    EXPECT_EQ(st[r]->blocks(), 0u);
  }
  Stagings none(P);  // null stagings
  const Topology one = Topology::fromNodeSizes({P});
  bufs = oracleBuffers(c, P, count);
  runShm(P, bufs, count, c.dt, c.op, none, one, 2);
  expectAllreduced(c, bufs, count);
}

// Mismatched calls (count, dtype, op) raise InvalidArgument on every rank,
// naming both sides, before any block moves; the next well-formed call works.
TEST(ShmAllreduceFailure, MismatchedCallsRaiseOnEveryRankAndLeaveTheStagingUsable) {
  ShmWorld w(3, 5000, 1.f);
  const int P = w.P;
  auto& data = w.data;
  uint32_t seq = 1;
  auto call = [&](auto countOf, auto opOf, std::vector<std::string>& errors) {
    runRanks(
        P,
        [&](Rank& rk) {
          auto ctx = shmContext(rk, seq, w.topo, w.st);
          try {
            allreduceShm(ctx, data[rk.rank].data(), countOf(rk.rank), DType::kFloat32,
                         opOf(rk.rank));
          } catch (const InvalidArgument& e) {
            errors[rk.rank] = e.what();
          }
        },
        w.fabric);
    ++seq;
  };
  std::vector<std::string> errors(P);
  call([](int r) { return r == 2 ? 4000 : 5000; }, [](int) { return ReduceOp::kSum; }, errors);
  for (int r = 0; r < P; ++r) {
    EXPECT_NE(errors[r].find("mismatch"), std::string::npos) << "rank " << r << ": " << errors[r];
    EXPECT_NE(errors[r].find("4000"), std::string::npos) << errors[r];
    EXPECT_NE(errors[r].find("5000"), std::string::npos) << errors[r];
  }
  errors.assign(P, "");
  call([](int) { return 5000; }, [](int r) { return r == 0 ? ReduceOp::kMax : ReduceOp::kSum; },
       errors);
  for (int r = 0; r < P; ++r)
    EXPECT_NE(errors[r].find("mismatch"), std::string::npos) << "rank " << r << ": " << errors[r];
  EXPECT_EQ(data[1][0], 1.f);  // untouched
  errors.assign(P, "");
  call([](int) { return 5000; }, [](int) { return ReduceOp::kSum; }, errors);
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(data[r][4999], 3.f) << "rank " << r;
  }
}

// A rank that never joins: the others time out naming it, well before the
// test's limit, and the staging then refuses to run (its counters no longer
// agree with the peer's).
TEST(ShmAllreduceFailure, MissingRankTimesOutThenStagingRefuses) {
  ShmWorld w(3, 4000, 1.f);
  w.sumAll(1);  // set up, all present
  EXPECT_EQ(w.data[0][17], 3.f);
  const auto t0 = Clock::now();
  std::vector<std::string> errors(w.P);
  runRanks(
      w.P,
      [&](Rank& rk) {
        if (rk.rank == 2) return;  // never joins
        auto ctx = shmContext(rk, 2, w.topo, w.st, std::chrono::milliseconds(300));
        try {
          allreduceShm(ctx, w.data[rk.rank].data(), 4000, DType::kFloat32, ReduceOp::kSum);
        } catch (const Timeout& e) {
          errors[rk.rank] = e.what();
        }
      },
      w.fabric);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  for (int r : {0, 1}) {
    EXPECT_NE(errors[r].find("rank 2"), std::string::npos) << "rank " << r << ": " << errors[r];
    try {
      w.sumOn(r, 3, std::chrono::milliseconds(300));
      ADD_FAILURE() << "rank " << r << ": a failed staging ran again";
    } catch (const PeerFailure& e) {
      EXPECT_NE(std::string(e.what()).find("earlier failure"), std::string::npos) << e.what();
    }
  }
}

// A peer that dies (the liveness ring's abort reaches the transport) fails
// the wait at once with PeerFailure, not at the deadline.
TEST(ShmAllreduceFailure, DeadPeerIsReportedBeforeTheDeadline) {
  ShmWorld w(2, 1000, 2.f);
  w.sumAll(1);
  w.fabric->kill(1);
  const auto t0 = Clock::now();
  EXPECT_THROW(w.sumOn(0, 2, std::chrono::seconds(30)), PeerFailure);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
}

}  // namespace
}  // namespace distx::testing
