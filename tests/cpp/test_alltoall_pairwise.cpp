// Pairwise all-to-all over 1-8 thread ranks: equal blocks, uneven per-peer
// sizes (zero-sized blocks included), split sizes that disagree between two
// ranks fail instead of hanging, and the traffic formula.
#include <gtest/gtest.h>

#include <string>

#include "algorithms/algorithm.h"
#include "harness.h"

namespace distx::testing {
namespace {

uint8_t byteOf(int from, int to, size_t i) {
  return static_cast<uint8_t>(from * 41 + to * 17 + i * 3 + 1);
}

// Bytes rank `from` sends to rank `to` under size rule `rule`.
size_t blockBytes(int rule, int P, int from, int to) {
  switch (rule) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return static_cast<size_t>(P + 1);
    case 3:
      return 10007;
    default:
      return static_cast<size_t>((from * 7 + to * 3) % 5) * 1001;  // uneven, some zero
  }
}

void check(int P, int rule) {
  // send[r][p]: what r sends to p; recv[r][p]: what r got from p.
  std::vector<std::vector<std::vector<uint8_t>>> send(P), recv(P);
  uint64_t sent[8] = {};
  for (int r = 0; r < P; ++r) {
    for (int p = 0; p < P; ++p) {
      std::vector<uint8_t> b(blockBytes(rule, P, r, p));
      for (size_t i = 0; i < b.size(); ++i)
        b[i] = byteOf(r, p, i);
      if (p != r) sent[r] += b.size();
      send[r].push_back(std::move(b));
      recv[r].emplace_back(blockBytes(rule, P, p, r), 0);
    }
  }
  auto bytes = runRanks(P, [&](Rank& rk) {
    const int r = rk.rank;
    std::vector<const void*> s;
    std::vector<void*> d;
    std::vector<size_t> sb, db;
    for (int p = 0; p < P; ++p) {
      s.push_back(send[r][p].data());
      sb.push_back(send[r][p].size());
      d.push_back(recv[r][p].data());
      db.push_back(recv[r][p].size());
    }
    auto ctx = rk.ctx(6);
    alltoallPairwise(ctx, s, sb, d, db);
  });
  for (int r = 0; r < P; ++r) {
    for (int p = 0; p < P; ++p) {
      ASSERT_EQ(recv[r][p], send[p][r])
          << "P=" << P << " rule " << rule << ": rank " << r << " block from " << p;
    }
    EXPECT_EQ(bytes[r], sent[r]) << "bytes sent by rank " << r;
  }
}

class AlltoallPairwise : public RanksTest {};

TEST_P(AlltoallPairwise, EqualAndUnevenBlocks) {
  for (int rule = 0; rule < 5; ++rule)
    check(ranks(), rule);
}

TEST_P(AlltoallPairwise, InPlaceOwnBlock) {
  const int P = ranks();
  const size_t n = 17;
  std::vector<std::vector<uint8_t>> in(P, std::vector<uint8_t>(n * P)),
      out(P, std::vector<uint8_t>(n * P, 0));
  for (int r = 0; r < P; ++r) {
    for (int p = 0; p < P; ++p) {
      for (size_t i = 0; i < n; ++i)
        in[r][p * n + i] = byteOf(r, p, i);
    }
  }
  runRanks(P, [&](Rank& rk) {
    const int r = rk.rank;
    std::vector<const void*> s;
    std::vector<void*> d;
    for (int p = 0; p < P; ++p) {
      s.push_back(in[r].data() + p * n);
      d.push_back(out[r].data() + p * n);
    }
    d[r] = const_cast<uint8_t*>(in[r].data() + r * n);  // own block received in place
    std::vector<size_t> sizes(P, n);
    auto ctx = rk.ctx(2);
    alltoallPairwise(ctx, s, sizes, d, sizes);
  });
  for (int r = 0; r < P; ++r) {
    for (int p = 0; p < P; ++p) {
      if (p == r) continue;
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(out[r][p * n + i], byteOf(p, r, i));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, AlltoallPairwise, bothProtocols(), ranksParamName);

TEST(AlltoallPairwiseFailure, DisagreeingSplitsAreAnErrorNotAHang) {
  // Rank 0 expects 8 bytes from rank 1, which sends 4 (and 0 expects what 1 sends).
  auto t0 = Clock::now();
  try {
    runRanks(2, [&](Rank& rk) {
      std::vector<uint8_t> a(8), b(8), c(8), d(8);
      std::vector<size_t> sb = rk.rank == 0 ? std::vector<size_t>{8, 8} : std::vector<size_t>{4, 8};
      std::vector<size_t> db = {8, 8};
      auto ctx = rk.ctx(1, std::chrono::seconds(10));
      alltoallPairwise(ctx, {a.data(), b.data()}, sb, {c.data(), d.data()}, db);
    });
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("disagree"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  EXPECT_THROW(runRanks(1,
                        [&](Rank& rk) {
                          uint8_t x[4];
                          auto ctx = rk.ctx(1);
                          alltoallPairwise(ctx, {x}, {4}, {x}, {2});  // own block: 4 out, 2 in
                        }),
               InvalidArgument);
}

}  // namespace
}  // namespace distx::testing
