#include "backend/completion_pool.hpp"

#include <pthread.h>

namespace distx {

CompletionPool::~CompletionPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  // A task still running may post another (and start a thread): join until
  // no thread is left, never touching threads_ outside the lock.
  for (;;) {
    std::vector<std::thread> joining;
    {
      std::lock_guard<std::mutex> lock(mu_);
      joining.swap(threads_);
    }
    if (joining.empty()) return;
    for (auto& t : joining)
      t.join();
  }
}

void CompletionPool::post(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(mu_);
  if (idle_ <= static_cast<int>(tasks_.size()) && static_cast<int>(threads_.size()) < kMaxThreads)
    threads_.emplace_back([this] { loop(); });
  tasks_.push_back(std::move(fn));
  lock.unlock();
  cv_.notify_one();
}

int CompletionPool::threads() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(threads_.size());
}

void CompletionPool::loop() {
  pthread_setname_np(pthread_self(), "distx-cb");
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    ++idle_;
    cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
    --idle_;
    if (tasks_.empty()) return;  // stopping and drained
    auto fn = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    fn();
    lock.lock();
  }
}

}  // namespace distx
