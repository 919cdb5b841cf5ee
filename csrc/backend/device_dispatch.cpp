#include "backend/device_dispatch.hpp"

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

#ifndef DISTX_WITH_CUDA
c10::intrusive_ptr<c10d::Backend> makeCudaBackend(CudaBackendDeps) {
  TORCH_CHECK_VALUE(false, "distx: this build has no CUDA support");
}
#endif

}  // namespace distx
