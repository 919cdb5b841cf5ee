// Note [Completion threads]
// A Future's callbacks run on the thread that completes it. Comm hooks such as
// PowerSGD issue a collective inside a callback and wait for it; if callbacks
// ran on the process group's worker thread, that wait would block the very
// thread that must run the inner collective. So completions that may run
// callbacks go to this pool: a task runs on an idle pool thread, or on a new
// one when all are busy (blocked in callbacks), up to kMaxThreads; past that
// it waits in the queue for a thread to come free. It never runs on the
// poster's thread: the worker thread running a callback when the pool is
// full would be the very deadlock the pool exists to avoid. Threads live
// until the pool is destroyed.
//
// Whether a completion may run callbacks at all is decided atomically with
// getFuture() (WorkDistx::complete): a Work whose Future nobody asked for
// completes inline, and getFuture() cannot slip in between the check and
// the completion.
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

  // Runs fn on a pool thread, never on the caller's.
  void post(std::function<void()> fn);
  // Threads started so far (tests).
  int threads();

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
