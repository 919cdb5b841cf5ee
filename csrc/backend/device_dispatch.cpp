#include "backend/device_dispatch.hpp"

#include "backend/op_checks.hpp"
#include "backend/process_group_distx.hpp"

#include <c10/util/Exception.h>

#include <algorithm>

namespace distx {
namespace detail {

void collectDevices(std::vector<c10::Device>& seen, const at::Tensor& t) {
  if (!t.defined()) return;  // checkTensor() reports it with the op's name
  const c10::Device d = t.device();
  if (std::find(seen.begin(), seen.end(), d) == seen.end()) seen.push_back(d);
}

bool decideCuda(const std::vector<c10::Device>& seen, const char* op) {
  bool cpu = false, cuda = false;
  for (const auto& d : seen) {
    cpu |= d.is_cpu();
    cuda |= d.is_cuda();
  }
  if (!cuda) return false;
  TORCH_CHECK_VALUE(!cpu, "distx ", op,
                    ": tensors of one call must all be on the CPU or all on CUDA, got both (",
                    seen.front(), " and ", seen.back(), ")");
#ifdef DISTX_WITH_CUDA
  return true;
#else
  TORCH_CHECK_VALUE(false, "distx ", op,
                    ": got a CUDA tensor, but this torch_distx was built without CUDA (rebuild "
                    "it against a CUDA build of torch), or move the tensor to the CPU");
#endif
}

}  // namespace detail

// The CUDA half of a group, made by its first CUDA call with what it needs of
// the group (CudaBackendDeps).
c10d::Backend& ProcessGroupDistx::cuda() {
  std::lock_guard<std::mutex> lock(mu_);
  checkUsable(nullptr, stopping_);
  if (!cuda_) {
    CudaBackendDeps deps;
    deps.store = store_;
    deps.rank = rank_;
    deps.size = size_;
    deps.groupName = groupName_;
    deps.timeout = [this] { return timeout_.load(); };
    deps.nextSeq = [this] {
      std::lock_guard<std::mutex> l(mu_);
      return ++seq_;
    };
    deps.host = this;
    deps.compressor = compressor_.get();
    deps.enqueueHost = [this](c10d::OpType type, const char* opName,
                              std::chrono::milliseconds timeout, Job job) {
      return enqueue(type, opName, timeout, {}, std::move(job));
    };
    deps.numNodes = topology_.numNodes();  // Note [Multi-host CUDA]
    deps.node = topology_.nodeOf(rank_);
    deps.localRank = topology_.localRank(rank_);
    deps.localSize = topology_.localSize(rank_);
    deps.uniform = topology_.uniform();
    cuda_ = makeCudaBackend(std::move(deps));
  }
  return *cuda_;
}

c10::intrusive_ptr<c10d::Backend> ProcessGroupDistx::takeCuda() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(cuda_);
}

#ifndef DISTX_WITH_CUDA
c10::intrusive_ptr<c10d::Backend> makeCudaBackend(CudaBackendDeps) {
  TORCH_CHECK_VALUE(false, "distx: this build has no CUDA support");
}
#endif

}  // namespace distx
