// Which memory UCX can move (Note [CUDA-aware rail], backend/cuda/rail_cuda.hpp).
#pragma once

namespace distx::ucx {

// True when the UCX loaded in this process reports CUDA device memory among
// the memory types a UCP context supports (UCX built with CUDA, e.g. the
// libucx-cu13 wheel). Asked once per process on a context of its own (a
// ucp_init and ucp_cleanup, a few milliseconds), then cached; false when the
// query itself fails.
bool cudaMemorySupported();

}  // namespace distx::ucx
