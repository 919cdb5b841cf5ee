// Note [Device dispatch]
// One ProcessGroupDistx serves CPU and CUDA tensors (torch registers it for
// both devices and hands the same instance every call). Each override starts
// with one line,
//
//   if (onCuda("all_reduce", tensors)) return cuda().allreduce(tensors, opts);
//
// onCuda() looks at every tensor of the call: all on the CPU -> false (the
// CPU path below runs), all on CUDA -> true, a mix -> ValueError. cuda() is the
// CUDA backend (backend/cuda/, Note [CUDA path]), created on first use and
// compiled only with DISTX_WITH_CUDA; a build without it raises ValueError
// for CUDA tensors. This header needs no CUDA header.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "algorithms/algorithm.h"

namespace distx {

class Compressor;  // backend/compressor.hpp

namespace detail {
// Adds the devices of `t` (or of every tensor in the lists) to `seen`.
void collectDevices(std::vector<c10::Device>& seen, const at::Tensor& t);
inline void collectDevices(std::vector<c10::Device>& seen, const std::vector<at::Tensor>& ts) {
  for (const auto& t : ts)
    collectDevices(seen, t);
}
inline void collectDevices(std::vector<c10::Device>& seen,
                           const std::vector<std::vector<at::Tensor>>& lists) {
  for (const auto& ts : lists)
    collectDevices(seen, ts);
}
// False when `seen` is empty or all CPU, true when all CUDA; ValueError for a
// mix (or CUDA in a build without it).
bool decideCuda(const std::vector<c10::Device>& seen, const char* op);
}  // namespace detail

// True when the call's tensors live on CUDA (Note [Device dispatch]).
template <typename... Ts>
bool onCuda(const char* op, const Ts&... tensors) {
  std::vector<c10::Device> seen;
  (detail::collectDevices(seen, tensors), ...);
  return detail::decideCuda(seen, op);
}

// What the CUDA backend needs from the group that owns it.
struct CudaBackendDeps {
  c10::intrusive_ptr<c10d::Store> store;  // the group's (prefixed) store
  int rank = 0;
  int size = 1;
  std::string groupName;
  std::function<std::chrono::milliseconds()> timeout;  // the group's current timeout
  std::function<uint64_t()> nextSeq;                   // the group's sequence counter
  // Where the group's ranks run (Note [Multi-host CUDA]): hosts it spans, this
  // rank's host index, local rank and ranks on its host.
  int numNodes = 1;
  int node = 0;
  int localRank = 0;
  int localSize = 1;
  bool uniform = true;  // every host holds the same number of ranks
  // The group's compression switch (Note [GPU compression]): consulted by the
  // multi-host all-reduce; its stage runs on the worker (enqueueHost).
  Compressor* compressor = nullptr;
  // The CPU path (the owning ProcessGroupDistx): multi-host CUDA collectives
  // run on it over pinned host copies.
  c10d::Backend* host = nullptr;
  // Queues `job` on the group's worker thread behind every op issued before
  // it (the hierarchical all-reduce); the returned Work fails if the job does.
  std::function<c10::intrusive_ptr<c10d::Work>(c10d::OpType type, const char* opName,
                                               std::chrono::milliseconds timeout,
                                               std::function<void(CollectiveContext&)> job)>
      enqueueHost;
};

// backend/cuda/cuda_backend.cpp (DISTX_WITH_CUDA), else device_dispatch.cpp's
// stub that raises.
c10::intrusive_ptr<c10d::Backend> makeCudaBackend(CudaBackendDeps deps);

}  // namespace distx
