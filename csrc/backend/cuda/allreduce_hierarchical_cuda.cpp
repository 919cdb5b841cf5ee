// Hierarchical all-reduce of CUDA tensors across hosts (Note [Multi-host
// CUDA]): NCCL reduce-scatter inside the host, a UCX rail across hosts, NCCL
// all-gather. The schedule, its invariant and its cost are device-neutral and
// live in algorithms/allreduce_hierarchical_device.cpp (Note [Device
// kernels]), where the C++ tests run it with the CPU kernels; this file gives
// it what is CUDA: the internal stream and the caller's event, the CUDA
// kernels and NCCL intra-node stages (rail_cuda.hpp), the DISTX_UCX_CUDA
// agreement (Note [CUDA-aware rail]), the compression gate's residual (Note
// [GPU compression]), and the Work.
//
// It runs as a job on the group's worker thread (in issue order with every
// other op of the group), so every rank issues its host communicator's NCCL
// calls in the same order; the Work completes the CUDA way once stage 3 is
// enqueued (markEnqueued, Note [CUDA Work]).
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>

#include <mutex>

#include "algorithms/hierarchical_device.h"
#include "backend/contig.hpp"
#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/rail_cuda.hpp"
#include "backend/work.hpp"
#include "common/env.h"
#include "common/logging.h"

namespace distx {

bool CudaBackend::railDirect(CollectiveContext& ctx) {
  if (railDirect_ >= 0) return railDirect_ == 1;
  const int mode = env::ucxCuda();  // -1 auto, 0 staged, 1 direct required
  const bool capable = ctx.transport.cudaMemory();
  int32_t vote = mode != 0 && capable ? 1 : 0;
  defaultRailAllreduce(ctx, &vote, 1, DType::kInt32, ReduceOp::kMin);  // phase 0: no stage uses it
  // Every op re-votes (and raises) while DISTX_UCX_CUDA=1 cannot be honoured.
  DISTX_CHECK(mode != 1 || vote == 1, InvalidArgument, "DISTX_UCX_CUDA=1: ",
              capable ? "the UCX of another rank of the group" : "this process's UCX",
              " cannot take CUDA memory; unset it to stage through pinned host memory");
  railDirect_ = vote;
  static std::once_flag logged;
  std::call_once(logged, [&] {
    DISTX_LOG(LogLevel::kInfo, prefix("all_reduce", ctx.seq),
              vote ? "inter-node stage: CUDA memory straight to UCX (CUDA-aware UCX on every rank)"
                   : detail::concat("inter-node stage: staged through pinned host memory (",
                                    mode == 0  ? "DISTX_UCX_CUDA=0"
                                    : !capable ? "this UCX has no CUDA memory support"
                                               : "another rank's UCX has no CUDA memory support",
                                    "); logged once"));
  });
  return vote == 1;
}

void CudaBackend::runHierarchicalAllreduce(CollectiveContext& ctx, nccl::Comm& comm,
                                           nccl::Stream stream, const at::Tensor& t,
                                           const ReduceSpec& spec, bool compress, BucketKey key) {
  Contig c(t);
  at::Tensor flat = c.buf.view({-1});
  if (spec.preMul) flat.mul_(spec.factor);
  const DType dt = toDType(flat.scalar_type(), "all_reduce");
  // The internal stream is current (the job's CUDAStreamGuard); NCCL runs on it too.
  CudaKernels kernels(flat.device(), c10::cuda::getCurrentCUDAStream(flat.device().index()),
                      railDirect_ == 1);
  NcclIntraNode intra(comm, stream, ctx.deadline);
  CompressSpec cs;
  DeviceRail rail;
  if (compress) {
    Compressor& cp = *deps_.compressor;
    cs.method = cp.config().method;
    cs.ratio = cp.config().ratio;
    cs.errorFeedback = cp.config().errorFeedback;
    rail = DeviceRail{&cs, &cp.mutableCounters(), deviceResidualFn(cp, key, flat.device())};
  }
  allreduceHierarchicalDevice(ctx, kernels, intra, flat.data_ptr(),
                              static_cast<size_t>(flat.numel()), dt, spec.op, rail);
  c.writeBack();
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allreduceMultiHost(std::vector<at::Tensor>& tensors,
                                                               const c10d::AllreduceOptions& opts) {
  const char* op = "all_reduce";
  const at::Tensor& t = singleTensor(tensors, op);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, t.scalar_type(), op);
  const c10::Device device = checkCall(op, {t}, {});  // one device, the group usable
  TORCH_CHECK(deps_.enqueueHost != nullptr, "distx ", op, ": no worker to run the stages on");
  // Note [GPU compression]: the group switch's gate, on the caller's thread.
  const bool compress =
      deps_.compressor != nullptr &&
      deps_.compressor->compresses(t.scalar_type(), t.device(), static_cast<int64_t>(t.nbytes()),
                                   spec.op, spec.preMul);
  const BucketKey key{reinterpret_cast<uintptr_t>(t.data_ptr()), t.numel()};
  const c10::cuda::CUDAGuard guard(device);
  DeviceState& st = deviceState(device, Clock::now(), /*withComm=*/false);
  at::cuda::CUDAEvent ready;
  ready.record(c10::cuda::getCurrentCUDAStream(device.index()));
  ready.block(st.stream);
  if (t.storage().data_ptr().get() != nullptr)
    c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), st.stream);
  auto work =
      c10::make_intrusive<WorkCuda>(rank_, c10d::OpType::ALLREDUCE, 0, profilingTitle(op),
                                    std::vector<at::Tensor>{t}, std::vector<at::Tensor>{}, device);
  {
    std::lock_guard<std::mutex> lock(mu_);
    lastOnWorker_ = work;
  }
  auto cpuWork = deps_.enqueueHost(
      c10d::OpType::ALLREDUCE, op, opts.timeout,
      [this, t, spec, device, work, compress, key](CollectiveContext& ctx) {
        const c10::cuda::CUDAGuard g(device);
        DeviceState& st = deviceState(device, ctx.deadline, /*withComm=*/true);
        const c10::cuda::CUDAStreamGuard sg(st.stream);
        railDirect(ctx);
        runHierarchicalAllreduce(ctx, *st.comm, st.stream.stream(), t, spec, compress, key);
        if (compress) deps_.compressor->afterRun(ctx);
        work->markEnqueued();
      });
  // A job that fails (or is dropped by abort) fails the CUDA Work with the CPU
  // path's DistBackendError ("[distx rank r/P pg g all_reduce seq s] ...").
  cpuWork->getFuture()->addCallback([work](c10::ivalue::Future& f) {
    if (f.hasError()) work->fail(f.exception_ptr());
  });
  return work;
}

}  // namespace distx
