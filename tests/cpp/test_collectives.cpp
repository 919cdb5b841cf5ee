// All-gather ring, tree broadcast and dissemination barrier over 1-8 thread ranks.
#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "algorithms/algorithm.h"
#include "harness.h"

namespace distx::testing {
namespace {

uint8_t byteOf(int r, size_t i) {
  return static_cast<uint8_t>(r * 31 + i * 7 + 1);
}

class Collectives : public RanksTest {};

TEST_P(Collectives, AllgatherRingPlacesEveryBlock) {
  const int P = ranks();
  for (size_t blockBytes : {size_t(0), size_t(1), size_t(5), size_t(4099), size_t(100000)}) {
    // out[r] holds P separate blocks (list form), each rank fills its own.
    std::vector<std::vector<std::vector<uint8_t>>> out(
        P, std::vector<std::vector<uint8_t>>(P, std::vector<uint8_t>(blockBytes)));
    for (int r = 0; r < P; ++r) {
      for (size_t i = 0; i < blockBytes; ++i)
        out[r][r][i] = byteOf(r, i);
    }
    auto bytes = runRanks(P, [&](Rank& rk) {
      std::vector<void*> blocks;
      for (auto& b : out[rk.rank])
        blocks.push_back(b.data());
      auto ctx = rk.ctx(3, std::chrono::seconds(30), 4096);
      allgatherRing(ctx, blocks, blockBytes);
    });
    for (int r = 0; r < P; ++r) {
      for (int b = 0; b < P; ++b) {
        for (size_t i = 0; i < blockBytes; ++i) {
          ASSERT_EQ(out[r][b][i], byteOf(b, i)) << "P=" << P << " rank " << r << " block " << b;
        }
      }
      EXPECT_EQ(bytes[r], (P - 1) * blockBytes);
    }
  }
}

TEST_P(Collectives, BroadcastTreeFromEveryRoot) {
  const int P = ranks();
  for (int root = 0; root < P; ++root) {
    for (size_t n : {size_t(0), size_t(1), size_t(4097), size_t(65536 * 3 + 1)}) {
      std::vector<std::vector<uint8_t>> bufs(P, std::vector<uint8_t>(n, 0));
      for (size_t i = 0; i < n; ++i)
        bufs[root][i] = byteOf(root, i);
      auto bytes = runRanks(P, [&](Rank& rk) {
        auto ctx = rk.ctx(static_cast<uint32_t>(root), std::chrono::seconds(30), 4096);
        broadcastTree(ctx, bufs[rk.rank].data(), n, root);
      });
      uint64_t total = 0;
      for (int r = 0; r < P; ++r) {
        ASSERT_EQ(bufs[r], bufs[root]) << "P=" << P << " root " << root << " rank " << r;
        total += bytes[r];
      }
      EXPECT_EQ(total, (P - 1) * n);  // every non-root receives exactly once
    }
  }
}

TEST_P(Collectives, BarrierWaitsForEveryone) {
  const int P = ranks();
  std::atomic<int> arrived{0};
  runRanks(P, [&](Rank& rk) {
    if (rk.rank == P - 1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    arrived.fetch_add(1);
    auto ctx = rk.ctx(9);
    barrierDissemination(ctx);
    EXPECT_EQ(arrived.load(), P);
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, Collectives, bothProtocols(), ranksParamName);

TEST(Collectives, ConcurrentSequencesDoNotMix) {
  // Two collectives with different sequence numbers in flight at once must not
  // consume each other's messages.
  const int P = 4;
  std::vector<std::vector<float>> a(P, std::vector<float>(1000)), b(P, std::vector<float>(1000));
  for (int r = 0; r < P; ++r) {
    for (int i = 0; i < 1000; ++i) {
      a[r][i] = static_cast<float>(r + 1);
      b[r][i] = static_cast<float>(10 * (r + 1));
    }
  }
  runRanks(P, [&](Rank& rk) {
    std::thread second([&] {
      auto ctx = rk.ctx(2, std::chrono::seconds(30), 256);
      allreduceRing(ctx, b[rk.rank].data(), 1000, DType::kFloat32, ReduceOp::kSum);
    });
    auto ctx = rk.ctx(1, std::chrono::seconds(30), 256);
    allreduceRing(ctx, a[rk.rank].data(), 1000, DType::kFloat32, ReduceOp::kSum);
    second.join();
  });
  for (int r = 0; r < P; ++r) {
    EXPECT_EQ(a[r][999], 10.f);
    EXPECT_EQ(b[r][0], 100.f);
  }
}

}  // namespace
}  // namespace distx::testing
