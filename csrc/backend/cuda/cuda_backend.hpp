// Note [CUDA path]
// CudaBackend is the half of a distx process group that serves CUDA tensors;
// ProcessGroupDistx forwards every call whose tensors are on CUDA to it (Note
// [Device dispatch]). Compiled only with DISTX_WITH_CUDA.
//
// Every op goes through launch(), on the caller's thread:
//  1. all tensors on one CUDA device d (ValueError otherwise); the group is
//     not broken (a watchdog abort makes every later op raise);
//  2. the NCCL communicator of d, created on first use (Note [NCCL bootstrap]);
//  3. the internal stream of d waits for an event recorded on the caller's
//     current stream, so kernels queued before the call are seen;
//  4. every input/output tensor is recordStream()ed on the internal stream, so
//     the caching allocator does not hand its memory out again before the
//     collective is done with it, even if the caller frees the tensor;
//  5. the body enqueues NCCL calls (and staging copies) with the internal
//     stream current; the Work then records its done event and completes its
//     Future there (Note [CUDA Work]);
//  6. the watchdog thread polls the done events; past the op's deadline, or on
//     an NCCL asynchronous error, it aborts the communicator (ncclCommAbort,
//     which also unblocks kernels stuck waiting for a peer) and fails the
//     Work with a DistBackendError naming op, sequence number and rank.
//
// Note [NCCL bootstrap]
// The n-th communicator a group creates is bootstrapped through the group's
// store under "nccl_id/<n>": its rank 0 calls ncclGetUniqueId and sets the
// key, the others get it (bounded by the store's timeout). Ranks create
// communicators in the same order (the first CUDA op of each device), as
// ProcessGroupNCCL assumes too.
#pragma once

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>

#include "backend/backend_overrides.hpp"
#include "backend/compressor.hpp"
#include "backend/cuda/work_cuda.hpp"
#include "backend/device_dispatch.hpp"
#include "backend/op_checks.hpp"
#include "transport/nccl/nccl_comm.h"

namespace distx {

// Note [Multi-host CUDA]: gives the pinned host copy of a CUDA tensor.
using HostMirror = std::function<at::Tensor(const at::Tensor&)>;
// A staged op's argument on the host: every tensor mirrored, anything else
// (options, split sizes, ranks, tags) as it is.
at::Tensor mirrored(const HostMirror& h, const at::Tensor& t);
std::vector<at::Tensor> mirrored(const HostMirror& h, const std::vector<at::Tensor>& ts);
std::vector<std::vector<at::Tensor>> mirrored(const HostMirror& h,
                                              const std::vector<std::vector<at::Tensor>>& ls);
template <typename T>
const T& mirrored(const HostMirror&, const T& v) {
  return v;
}
std::vector<at::Tensor> flatten(const std::vector<std::vector<at::Tensor>>& ls);

class CudaBackend final : public c10d::Backend {
 public:
  explicit CudaBackend(CudaBackendDeps deps);
  ~CudaBackend() override;

  const std::string getBackendName() const override { return "distx"; }

  // The ops both halves serve (backend_overrides.hpp), defined in
  // collectives_cuda.cpp (NCCL collectives) and collectives_cuda_p2p.cpp
  // (gather, scatter, the all-to-alls and send/recv, from NCCL send/recv).
  DISTX_BACKEND_OVERRIDES();

  // Aborts every communicator (pending ops fail) and stops the watchdog.
  void shutdown() override;
  void abort() override;

 private:
  struct DeviceState {
    c10::cuda::CUDAStream stream;      // the internal stream
    std::unique_ptr<nccl::Comm> comm;  // made by the first NCCL op on the device
  };
  // What a body enqueues: the communicator, the internal stream (current while
  // the body runs) and the op's deadline.
  using Body = std::function<void(nccl::Comm&, nccl::Stream, Deadline)>;

  // Note [CUDA path] step 1: the one CUDA device of the op's tensors, once
  // the group is still usable (checkUsable, op_checks.hpp).
  c10::Device checkCall(const char* opName, const std::vector<at::Tensor>& inputs,
                        const std::vector<at::Tensor>& outputs);
  // Note [CUDA path] steps 1-6. `inputs` and `outputs` are every tensor the
  // op touches (for the device check and recordStream); `outputs` are the
  // Work's result.
  c10::intrusive_ptr<WorkCuda> launch(c10d::OpType type, const char* opName,
                                      std::chrono::milliseconds timeout,
                                      const std::vector<at::Tensor>& inputs,
                                      const std::vector<at::Tensor>& outputs, const Body& body);
  // The device's internal stream, and its communicator when `withComm`.
  DeviceState& deviceState(c10::Device device, Deadline deadline, bool withComm = true);

  // Note [Multi-host CUDA] (collectives_cuda_staged.cpp): `call` runs the CPU
  // path's op on pinned host copies that `mirror` makes of CUDA tensors; the
  // mirrored outputs are copied back on the internal stream.
  using HostCall = std::function<c10::intrusive_ptr<c10d::Work>(const HostMirror& mirror)>;
  bool multiHost() const { return deps_.numNodes > 1; }

  // allreduce_hierarchical_cuda.cpp (Note [Multi-host CUDA]): the all-reduce
  // of a multi-host group with the same number of ranks on every host.
  c10::intrusive_ptr<c10d::Work> allreduceMultiHost(std::vector<at::Tensor>& tensors,
                                                    const c10d::AllreduceOptions& opts);
  // compress: the group switch's gate said yes (Note [GPU compression]);
  // key: the bucket's identity for the error-feedback residual.
  void runHierarchicalAllreduce(CollectiveContext& ctx, nccl::Comm& comm, nccl::Stream stream,
                                const at::Tensor& t, const ReduceSpec& spec, bool compress,
                                BucketKey key);
  // Worker thread: whether the rail hands device pointers to UCX, agreed by
  // every rank of the group at the first multi-host all-reduce (on ctx).
  bool railDirect(CollectiveContext& ctx);
  c10::intrusive_ptr<c10d::Work> staged(c10d::OpType type, const char* opName,
                                        const std::vector<at::Tensor>& inputs,
                                        const std::vector<at::Tensor>& outputs,
                                        const HostCall& call);
  // staged() with the CPU path's override `fn` of the same op (e.g.
  // &c10d::Backend::gather) as the call, on `args` mirrored.
  template <typename Fn, typename... Args>
  c10::intrusive_ptr<c10d::Work> onHost(c10d::OpType type, const char* opName,
                                        const std::vector<at::Tensor>& inputs,
                                        const std::vector<at::Tensor>& outputs, Fn fn,
                                        Args&... args) {
    return staged(type, opName, inputs, outputs, [&](const HostMirror& h) {
      auto host = std::make_tuple(mirrored(h, args)...);
      return std::apply([&](auto&... a) { return (deps_.host->*fn)(a...); }, host);
    });
  }
  std::string prefix(const char* opName, uint64_t seq) const;
  void watchdogLoop();
  // Aborts every communicator and fails every pending Work (first reason wins).
  void breakGroup(const std::string& reason);

  const CudaBackendDeps deps_;

  std::mutex commMu_;  // guards devices_ (creating streams and communicators)
  std::map<int, DeviceState> devices_;
  int commsCreated_ = 0;

  struct Pending {
    c10::intrusive_ptr<WorkCuda> work;
    Deadline deadline;
    const char* opName;
    uint64_t seq;
    std::chrono::milliseconds timeout;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;  // guarded by mu_
  std::string broken_;           // guarded by mu_: why the group cannot run ops any more
  // The last op queued on the group's worker (Note [Multi-host CUDA]): staged
  // ops wait until it has enqueued its CUDA work before reading their inputs.
  c10::intrusive_ptr<WorkCuda> lastOnWorker_;  // guarded by mu_
  bool stopping_ = false;                      // guarded by mu_
  int railDirect_ = -1;                        // worker thread only: -1 not agreed yet, else 0 / 1
  std::thread watchdog_;
};

// The CPU path's ReduceSpec, with TypeError where NCCL has no such reduction.
ReduceSpec ncclReduceSpec(const c10d::ReduceOp& op, at::ScalarType dtype, const char* opName);

// Checks that every tensor of an op is a dense CUDA tensor on one device and
// returns that device (ValueError otherwise).
c10::Device commonCudaDevice(const std::vector<at::Tensor>& ts, const char* op);

}  // namespace distx
