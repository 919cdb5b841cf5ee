// How the codec kernels spread one bucket over threads. Torch-free: the torch
// layer plugs in at::parallel_for (so codecs share torch's intra-op pool); the
// default spawns std::threads, which is what tests and a future backend use.
//
// Results never depend on the chunking: casts are element-wise, top-k selects
// by a total order (magnitude, then index) and decodes serially.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>

namespace distx {
namespace compression {

struct Parallel {
  // Upper bound on tasks that run at once.
  size_t threads = 1;
  // Runs task(0) ... task(tasks - 1), each exactly once, returning when all finished.
  std::function<void(size_t tasks, const std::function<void(size_t)>& task)> run;
};

// std::thread::hardware_concurrency() threads (the calling thread runs one task).
const Parallel& defaultParallel();
// Everything on the calling thread.
const Parallel& serialParallel();

// Number of chunks for n elements: at least one, each at least `grain`
// elements, at most four per thread (to even out stragglers).
inline size_t chunkCount(size_t n, size_t grain, const Parallel& par) {
  const size_t byGrain = std::max<size_t>(1, n / std::max<size_t>(1, grain));
  return std::min(byGrain, std::max<size_t>(1, par.threads) * 4);
}

inline size_t chunkBegin(size_t n, size_t chunks, size_t c) {
  return n / chunks * c + std::min(c, n % chunks);
}

// Runs fn(begin, end) over chunkCount(n, grain, par) contiguous chunks of [0, n).
void parallelRange(size_t n, size_t grain, const Parallel& par,
                   const std::function<void(size_t begin, size_t end)>& fn);

}  // namespace compression
}  // namespace distx
