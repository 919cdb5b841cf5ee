// Linear gather and scatter over 1-8 thread ranks: every root, sizes 0, 1,
// P-1, P+1, prime and large, aliased own blocks, size mismatches detected,
// and the traffic formula (only the root's peers' blocks move).
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "algorithms/algorithm.h"
#include "harness.h"

namespace distx::testing {
namespace {

uint8_t byteOf(int r, size_t i) {
  return static_cast<uint8_t>(r * 29 + i * 13 + 7);
}

std::vector<size_t> sizesFor(int P) {
  return {0, 1, static_cast<size_t>(P > 1 ? P - 1 : 2), static_cast<size_t>(P + 1), 10007, 300001};
}

using Blocks = std::vector<std::vector<uint8_t>>;

// P blocks of n bytes, block r holding byteOf(r, i).
Blocks blocksOf(int P, size_t n) {
  Blocks blocks(P, std::vector<uint8_t>(n));
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < n; ++i)
      blocks[r][i] = byteOf(r, i);
  }
  return blocks;
}

// The root's block list: the data pointers of `blocks`; empty off the root.
template <class Ptr>
std::vector<Ptr> pointersAt(bool root, Blocks& blocks) {
  std::vector<Ptr> out;
  if (root) {
    for (auto& b : blocks)
      out.push_back(b.data());
  }
  return out;
}

using BlockOp = std::function<void(CollectiveContext& ctx, int rank, int root, size_t n, Blocks& in,
                                   Blocks& out)>;

// Runs op on P ranks for every root and size, then checks that every block
// arrived (out == in) and that rank r sent sentBy(r == root, n) bytes.
void checkEveryRootAndSize(int P, const BlockOp& op,
                           const std::function<uint64_t(bool isRoot, size_t n)>& sentBy) {
  for (int root = 0; root < P; ++root) {
    for (size_t n : sizesFor(P)) {
      Blocks in = blocksOf(P, n), out(P, std::vector<uint8_t>(n, 0));
      auto bytes = runRanks(P, [&](Rank& rk) {
        auto ctx = rk.ctx(4);
        op(ctx, rk.rank, root, n, in, out);
      });
      for (int r = 0; r < P; ++r) {
        ASSERT_EQ(out[r], in[r]) << "P=" << P << " root " << root << " n=" << n << " block " << r;
        EXPECT_EQ(bytes[r], sentBy(r == root, n));
      }
    }
  }
}

class GatherScatter : public RanksTest {};

TEST_P(GatherScatter, GatherPlacesEveryBlockAtTheRoot) {
  checkEveryRootAndSize(
      ranks(),
      [](CollectiveContext& ctx, int rank, int root, size_t n, Blocks& in, Blocks& out) {
        gatherLinear(ctx, in[rank].data(), n, pointersAt<void*>(rank == root, out), root);
      },
      [](bool isRoot, size_t n) -> uint64_t { return isRoot ? 0 : n; });
}

TEST_P(GatherScatter, ScatterDeliversEachRankItsBlock) {
  const int P = ranks();
  checkEveryRootAndSize(
      P,
      [](CollectiveContext& ctx, int rank, int root, size_t n, Blocks& in, Blocks& out) {
        scatterLinear(ctx, pointersAt<const void*>(rank == root, in), out[rank].data(), n, root);
      },
      [P](bool isRoot, size_t n) -> uint64_t { return isRoot ? (P - 1) * n : 0; });
}

TEST_P(GatherScatter, RootBlockMayAliasItsOwnSlot) {
  const int P = ranks();
  const size_t n = 33;
  std::vector<std::vector<uint8_t>> bufs(P, std::vector<uint8_t>(n * P, 0));
  for (int r = 0; r < P; ++r) {
    for (size_t i = 0; i < n; ++i)
      bufs[r][r * n + i] = byteOf(r, i);
  }
  runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(4);
    std::vector<void*> blocks;
    for (int b = 0; b < P; ++b)
      blocks.push_back(bufs[rk.rank].data() + b * n);
    gatherLinear(ctx, blocks[rk.rank], n, rk.rank == 0 ? blocks : std::vector<void*>{}, 0);
  });
  for (int b = 0; b < P; ++b) {
    for (size_t i = 0; i < n; ++i)
      ASSERT_EQ(bufs[0][b * n + i], byteOf(b, i));
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, GatherScatter, bothProtocols(), ranksParamName);

TEST(GatherScatterFailure, SizeMismatchIsAnErrorNotAHang) {
  // Rank 1 sends fewer bytes than the root expects.
  EXPECT_THROW(runRanks(2,
                        [&](Rank& rk) {
                          auto ctx = rk.ctx(1, std::chrono::seconds(5));
                          std::vector<uint8_t> in(rk.rank == 0 ? 8 : 4, 1), o0(8), o1(8);
                          gatherLinear(ctx, in.data(), in.size(), {o0.data(), o1.data()}, 0);
                        }),
               InvalidArgument);
  // The root sends more than rank 1 posted: the transport reports truncation.
  EXPECT_THROW(runRanks(2,
                        [&](Rank& rk) {
                          auto ctx = rk.ctx(1, std::chrono::seconds(5));
                          std::vector<uint8_t> a(8, 1), b(8, 2), out(rk.rank == 0 ? 8 : 4);
                          scatterLinear(ctx, {a.data(), b.data()}, out.data(), out.size(), 0);
                        }),
               Error);
  EXPECT_THROW(runRanks(2,
                        [&](Rank& rk) {
                          auto ctx = rk.ctx(1);
                          uint8_t x = 0;
                          gatherLinear(ctx, &x, 1, {&x}, 0);  // root with one block for two ranks
                        }),
               Error);
}

}  // namespace
}  // namespace distx::testing
