// Hierarchical all-reduce of CUDA tensors across hosts (Note [Multi-host CUDA]).
//
// Schedule, n elements, g ranks on each of N hosts (uniform), rank at local
// rank l:
//   1. intra   NCCL reduce-scatter over the host's communicator: local rank l
//              owns shard l (n/g elements, the tensor zero-padded to g shards);
//   2. inter   the shards of local rank l on every host form rail l; they are
//              all-reduced over UCX on a context narrowed to the rail (the flat
//              size rules of select.cpp), through a pinned host copy (UCX
//              without CUDA support cannot read device memory);
//   3. intra   NCCL all-gather of the shards back into the whole tensor.
// AVG runs as SUM and divides once at the end (integer AVG truncates, as the
// CPU path). PREMUL_SUM scales before stage 1.
// Invariant: every rank ends with bit-identical results: stage 2 leaves every
// rank of a rail the same bytes, and stage 3 only copies.
// Cost per rank: intra 2(g-1)/g·N bytes over NCCL; inter 2(N-1)/N·n/g elements
// over UCX plus one device-to-host and one host-to-device copy of n/g.
//
// It runs as a job on the group's worker thread (in issue order with every
// other op of the group), so every rank issues its host communicator's NCCL
// calls in the same order; the Work completes the CUDA way once stage 3 is
// enqueued (markEnqueued, Note [CUDA Work]).
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>

#include "backend/contig.hpp"
#include "backend/cuda/cuda_backend.hpp"
#include "backend/work.hpp"

namespace distx {
namespace {

// Tag phase of the inter-node stage (Note [Narrowed context]); the NCCL stages
// send nothing over UCX.
constexpr uint32_t kRailPhase = 1;

}  // namespace

void CudaBackend::runHierarchicalAllreduce(CollectiveContext& ctx, nccl::Comm& comm,
                                           nccl::Stream stream, const at::Tensor& t,
                                           const ReduceSpec& spec) {
  const Topology topo = contextTopology(ctx);
  const int me = ctx.rank();
  const int g = topo.localSize(me);
  const int P = ctx.size();
  const ReduceOp op = spec.op == ReduceOp::kAvg ? ReduceOp::kSum : spec.op;
  Contig c(t);
  at::Tensor flat = c.buf.view({-1});
  if (spec.preMul) flat.mul_(spec.factor);
  const DType dt = toDType(flat.scalar_type(), "all_reduce");
  const int64_t n = flat.numel();
  const int64_t shard = (n + g - 1) / g;
  at::Tensor padded =
      shard * g == n ? flat : at::cat({flat, at::zeros({shard * g - n}, flat.options())});
  at::Tensor mine = g > 1 ? at::empty({shard}, flat.options()) : padded;
  if (g > 1 && shard > 0) {
    comm.reduceScatter(padded.data_ptr(), mine.data_ptr(), static_cast<size_t>(shard), dt, op,
                       stream, ctx.deadline);
  }
  CollectiveContext rail = ctx.narrow(topo.rail(topo.localRank(me)), kRailPhase);
  railStage(rail, mine, op);
  if (g > 1 && shard > 0) {
    comm.allGather(mine.data_ptr(), padded.data_ptr(), static_cast<size_t>(shard), dt, stream,
                   ctx.deadline);
  }
  if (!padded.is_same(flat)) flat.copy_(padded.narrow(0, 0, n));
  if (spec.op == ReduceOp::kAvg) {
    if (at::isFloatingType(flat.scalar_type()) || at::isComplexType(flat.scalar_type())) {
      flat.div_(P);
    } else {
      flat.copy_(at::div(flat, P, "trunc"));
    }
  }
  c.writeBack();
}

void CudaBackend::railStage(CollectiveContext& rail, at::Tensor& shard, ReduceOp op) {
  // Pinned host copy: the device-to-host copy waits for stage 1 on the
  // internal stream (current here) and completes before UCX reads the buffer.
  at::Tensor host = at::empty(shard.sizes(), shard.options().device(at::kCPU).pinned_memory(true));
  host.copy_(shard);
  defaultRailAllreduce(rail, host.data_ptr(), static_cast<size_t>(host.numel()),
                       toDType(host.scalar_type(), "all_reduce"), op);
  shard.copy_(host, /*non_blocking=*/true);
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allreduceMultiHost(std::vector<at::Tensor>& tensors,
                                                               const c10d::AllreduceOptions& opts) {
  const char* op = "all_reduce";
  const at::Tensor& t = singleTensor(tensors, op);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, t.scalar_type(), op);
  const c10::Device device = commonCudaDevice({t}, op);
  TORCH_CHECK(deps_.enqueueHost != nullptr, "distx ", op, ": no worker to run the stages on");
  {
    std::lock_guard<std::mutex> lock(mu_);
    TORCH_CHECK_WITH(DistBackendError, broken_.empty(), "distx ", op,
                     ": the process group can no longer run CUDA collectives: ", broken_);
    TORCH_CHECK(!stopping_, "distx ", op, ": the process group was shut down or aborted");
  }
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
  auto cpuWork =
      deps_.enqueueHost(c10d::OpType::ALLREDUCE, op, opts.timeout,
                        [this, t, spec, device, work](CollectiveContext& ctx) {
                          const c10::cuda::CUDAGuard g(device);
                          DeviceState& st = deviceState(device, ctx.deadline, /*withComm=*/true);
                          const c10::cuda::CUDAStreamGuard sg(st.stream);
                          runHierarchicalAllreduce(ctx, *st.comm, st.stream.stream(), t, spec);
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
