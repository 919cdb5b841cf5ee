// Lifetime limits of the algorithms and the backend's completion pool:
// the tag's slot field is checked, not wrapped; reduce_tree's scratch does
// not grow with the tensor; the completion pool never runs a task on the
// poster's thread, even when every pool thread is busy, and its destructor
// runs and joins what its tasks post while it is being destroyed.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "algorithms/algorithm.h"
#include "backend/completion_pool.hpp"
#include "harness.h"

namespace distx::testing {
namespace {

TEST(Slots, TooManyChunksRaiseInsteadOfWrapping) {
  // 1-byte chunks over 2^22 + 2 bytes: the ring all-reduce on 2 ranks needs
  // 2 steps x (2^21 + 1) slots, broadcast and reduce one per chunk; all > 2^22.
  const size_t count = tag::kMaxSlots + 2;
  std::vector<std::vector<uint8_t>> bufs(2, std::vector<uint8_t>(count, 1));
  for (auto* algo : {"ring", "broadcast", "reduce"}) {
    EXPECT_THROW(
        runRanks(2,
                 [&](Rank& rk) {
                   auto ctx = rk.ctx(1, std::chrono::seconds(30), 1);
                   const std::string a = algo;
                   if (a == "ring")
                     allreduceRing(ctx, bufs[rk.rank].data(), count, DType::kUInt8, ReduceOp::kSum);
                   else if (a == "broadcast")
                     broadcastTree(ctx, bufs[rk.rank].data(), count, 0);
                   else
                     reduceTree(ctx, bufs[rk.rank].data(), count, DType::kUInt8, ReduceOp::kSum, 0);
                 }),
        InvalidArgument)
        << algo;
  }
}

TEST(ReduceTreeScratch, StaysAFewChunksPerChildWhateverTheTensor) {
  const int P = 4;  // the root has two children
  const size_t count = 1 << 20, chunkBytes = 4096;
  std::vector<std::vector<float>> bufs(P, std::vector<float>(count));
  for (int r = 0; r < P; ++r)
    for (size_t i = 0; i < count; ++i)
      bufs[r][i] = static_cast<float>((i % 97) * (r + 1));
  std::vector<std::vector<uint8_t>> scratch(P);
  runRanks(P, [&](Rank& rk) {
    auto ctx = rk.ctx(3, std::chrono::seconds(30), chunkBytes);
    ctx.scratch = &scratch[rk.rank];
    reduceTree(ctx, bufs[rk.rank].data(), count, DType::kFloat32, ReduceOp::kSum, 0);
  });
  for (size_t i = 0; i < count; i += 4099)
    ASSERT_EQ(bufs[0][i], static_cast<float>((i % 97) * 10)) << i;
  for (int r = 0; r < P; ++r)
    EXPECT_LE(scratch[r].size(), 2 * 4 * chunkBytes)
        << "rank " << r << " kept " << scratch[r].size() << " scratch bytes";
}

TEST(CompletionPool, NeverRunsATaskOnThePostersThreadWhenFull) {
  CompletionPool pool;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> ran{0}, onPoster{0};
  const auto poster = std::this_thread::get_id();
  auto task = [&] {
    if (std::this_thread::get_id() == poster) onPoster++;
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    ran++;
  };
  // More blocked callbacks than the pool has threads: the extra ones queue.
  for (int i = 0; i < CompletionPool::kMaxThreads + 3; ++i)
    pool.post(task);
  EXPECT_EQ(onPoster.load(), 0);
  EXPECT_LE(pool.threads(), CompletionPool::kMaxThreads);
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  for (int i = 0; i < 500 && ran < CompletionPool::kMaxThreads + 3; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(ran.load(), CompletionPool::kMaxThreads + 3);
  EXPECT_EQ(onPoster.load(), 0);
}

TEST(CompletionPool, DestructionRunsAndJoinsWhatItsTasksPost) {
  auto pool = std::make_unique<CompletionPool>();
  CompletionPool* raw = pool.get();
  constexpr int kChain = 40;
  std::atomic<int> ran{0};
  std::atomic<bool> destroying{false};
  std::function<void(int)> link = [&](int depth) {
    // The first link waits until the destructor is about to run, so the
    // rest of the chain is posted while it joins.
    while (depth == 0 && !destroying.load())
      std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    ran++;
    if (depth + 1 < kChain) raw->post([&link, depth] { link(depth + 1); });
  };
  // Busy tasks keep several threads alive, so the chain's posts may start more.
  for (int i = 0; i < 4; ++i)
    pool->post([] { std::this_thread::sleep_for(std::chrono::milliseconds(5)); });
  pool->post([&link] { link(0); });
  destroying = true;
  pool.reset();  // must return only after the whole chain ran and every thread joined
  EXPECT_EQ(ran.load(), kChain);
}

}  // namespace
}  // namespace distx::testing
