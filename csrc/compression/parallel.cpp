#include "compression/parallel.h"

#include <atomic>
#include <exception>
#include <thread>
#include <vector>

namespace distx {
namespace compression {
namespace {

// Spawns min(tasks, threads) - 1 threads per call (~20 us each, noise next to
// the >= 1 ms buckets that are split at all: kernels pass grains of 32K+
// elements); workers pull task indices from a shared counter.
void runThreads(size_t threads, size_t tasks, const std::function<void(size_t)>& task) {
  const size_t workers = std::min(tasks, threads);
  if (workers <= 1) {
    for (size_t i = 0; i < tasks; ++i)
      task(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(workers);
  auto work = [&](size_t w) {
    try {
      for (size_t i = next++; i < tasks; i = next++)
        task(i);
    } catch (...) {
      errors[w] = std::current_exception();
      next = tasks;  // the others stop taking new tasks
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (size_t w = 1; w < workers; ++w)
    pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool)
    t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

void runSerial(size_t tasks, const std::function<void(size_t)>& task) {
  for (size_t i = 0; i < tasks; ++i)
    task(i);
}

}  // namespace

const Parallel& defaultParallel() {
  static const Parallel par = [] {
    const size_t threads = std::max(1u, std::thread::hardware_concurrency());
    return Parallel{threads, [threads](size_t tasks, const std::function<void(size_t)>& task) {
                      runThreads(threads, tasks, task);
                    }};
  }();
  return par;
}

const Parallel& serialParallel() {
  static const Parallel par{1, runSerial};
  return par;
}

void parallelRange(size_t n, size_t grain, const Parallel& par,
                   const std::function<void(size_t begin, size_t end)>& fn) {
  const size_t chunks = chunkCount(n, grain, par);
  if (chunks == 1) return fn(0, n);
  par.run(chunks, [&](size_t c) { fn(chunkBegin(n, chunks, c), chunkBegin(n, chunks, c + 1)); });
}

}  // namespace compression
}  // namespace distx
