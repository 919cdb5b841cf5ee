// Note [Completion threads]
// A Future's callbacks run on the thread that completes it. Comm hooks such as
// PowerSGD issue a collective inside a callback and wait for it; if callbacks
// ran on the process group's worker thread, that wait would block the very
// thread that must run the inner collective. So completions that may run
// callbacks go to this pool: a task runs on an idle pool thread, or on a new
// one when all are busy (blocked in callbacks), up to kMaxThreads. Threads
// live until the pool is destroyed.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace distx {

class CompletionPool {
 public:
  static constexpr int kMaxThreads = 16;
  CompletionPool() = default;
  ~CompletionPool();
  CompletionPool(const CompletionPool&) = delete;
  CompletionPool& operator=(const CompletionPool&) = delete;

  // Runs fn on a pool thread; false if the pool is at kMaxThreads with every
  // thread busy (the caller then runs fn itself).
  bool post(std::function<void()> fn);

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  int idle_ = 0;
  bool stop_ = false;
};

}  // namespace distx
