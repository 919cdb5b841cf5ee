// Note [Multi-host CUDA]
// A group whose ranks run on several hosts cannot put every rank in one NCCL
// communicator in general (in tests two "hosts" even share one GPU, which
// NCCL refuses), so with numNodes > 1:
//  - all_reduce takes the hierarchical path where the topology allows it
//    (allreduce_hierarchical_cuda.cpp): NCCL inside the host, UCX across;
//  - every other collective is staged: its CUDA tensors are copied to pinned
//    host memory (after the caller's stream, on the internal stream), the CPU
//    path runs the op over UCX, and the outputs are copied back on the
//    internal stream. The call blocks until the CPU op is done (the GPU is
//    not blocked); it is the correct, slower fallback for ops that are rare in
//    training loops (broadcast at start-up, object collectives, barriers).
// All of a multi-host group's CUDA work goes through the group's worker queue
// in issue order, as the CPU ops do, so every rank issues NCCL calls on its
// host communicator in the same order.
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>

#include <unordered_map>

#include "backend/cuda/cuda_backend.hpp"
#include "backend/work.hpp"

namespace distx {

at::Tensor mirrored(const HostMirror& h, const at::Tensor& t) {
  return h(t);
}

std::vector<at::Tensor> mirrored(const HostMirror& h, const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts)
    out.push_back(h(t));
  return out;
}

std::vector<std::vector<at::Tensor>> mirrored(const HostMirror& h,
                                              const std::vector<std::vector<at::Tensor>>& ls) {
  std::vector<std::vector<at::Tensor>> out;
  for (const auto& ts : ls)
    out.push_back(mirrored(h, ts));
  return out;
}

std::vector<at::Tensor> flatten(const std::vector<std::vector<at::Tensor>>& ls) {
  std::vector<at::Tensor> out;
  for (const auto& ts : ls)
    out.insert(out.end(), ts.begin(), ts.end());
  return out;
}

c10::intrusive_ptr<c10d::Work> CudaBackend::staged(c10d::OpType type, const char* opName,
                                                   const std::vector<at::Tensor>& inputs,
                                                   const std::vector<at::Tensor>& outputs,
                                                   const HostCall& call) {
  const c10::Device device = checkCall(opName, inputs, outputs);
  TORCH_CHECK(deps_.host != nullptr, "distx ", opName, ": no CPU path to stage through");
  c10::intrusive_ptr<WorkCuda> last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last = lastOnWorker_;
  }
  if (last) last->waitEnqueued();  // its last stage is on the internal stream now
  const c10::cuda::CUDAGuard guard(device);
  DeviceState& st = deviceState(device, Clock::now(), /*withComm=*/false);
  // Ordered after the caller's stream and after the CUDA collectives this
  // group issued before (they are on the same internal stream).
  at::cuda::CUDAEvent ready;
  ready.record(c10::cuda::getCurrentCUDAStream(device.index()));
  ready.block(st.stream);

  struct Pair {
    at::Tensor cuda, host;
  };
  std::unordered_map<const void*, Pair> mirrors;  // by TensorImpl
  const c10::cuda::CUDAStreamGuard streamGuard(st.stream);
  const HostMirror mirror = [&](const at::Tensor& t) -> at::Tensor {
    auto it = mirrors.find(t.unsafeGetTensorImpl());
    if (it != mirrors.end()) return it->second.host;
    at::Tensor h = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
    h.copy_(t);  // synchronous: the host copy is complete before the CPU op reads it
    mirrors.emplace(t.unsafeGetTensorImpl(), Pair{t, h});
    return h;
  };
  c10::intrusive_ptr<c10d::Work> cpuWork = call(mirror);
  cpuWork->wait();  // raises the CPU path's DistBackendError (timeout, dead peer)

  auto work = c10::make_intrusive<WorkCuda>(rank_, type, cpuWork->getSequencenumber(),
                                            profilingTitle(opName), outputs, inputs, device);
  if (type == c10d::OpType::RECV || type == c10d::OpType::RECVANYSOURCE)
    work->setSourceRank(cpuWork->sourceRank());
  for (const auto& out : outputs) {
    auto it = mirrors.find(out.unsafeGetTensorImpl());
    if (it != mirrors.end()) out.copy_(it->second.host, /*non_blocking=*/true);
  }
  work->markEnqueued();
  return work;
}

}  // namespace distx
