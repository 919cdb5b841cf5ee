// Hierarchical all-reduce of CUDA tensors across hosts (Note [Multi-host CUDA]).
//
// Schedule, n elements, g ranks on each of N hosts (uniform), rank at local
// rank l:
//   1. intra   NCCL reduce-scatter over the host's communicator: local rank l
//              owns shard l (n/g elements, the tensor zero-padded to g shards);
//   2. inter   the shards of local rank l on every host form rail l; they are
//              all-reduced over UCX on a context narrowed to the rail: through
//              a pinned host copy with the flat size rules of select.cpp, or,
//              where every rank's UCX takes CUDA memory, straight from device
//              memory with the reduction on the GPU (Note [CUDA-aware rail]);
//              with the group's compression switch on, the CUDA codecs
//              compress this stage only (Note [GPU compression]);
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

#include <mutex>

#include "backend/contig.hpp"
#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/rail_cuda.hpp"
#include "backend/work.hpp"
#include "common/env.h"
#include "common/logging.h"

namespace distx {
namespace {

// Tag phase of the inter-node stage (Note [Narrowed context]); the NCCL stages
// send nothing over UCX.
constexpr uint32_t kRailPhase = 1;

}  // namespace

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
  railStage(rail, mine, op, compress, key);
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

void CudaBackend::railStage(CollectiveContext& rail, at::Tensor& shard, ReduceOp op, bool compress,
                            BucketKey key) {
  const RailWire wire(railDirect_ == 1, c10::cuda::getCurrentCUDAStream(shard.device().index()));
  const DenseRailFn dense = [&wire](CollectiveContext& c, at::Tensor& x, ReduceOp o) {
    if (wire.direct()) {
      railDenseDirect(c, x, o, wire);
      return;
    }
    // Pinned host copy: the device-to-host copy waits for the earlier stages
    // on the internal stream (current here) and completes before UCX reads.
    at::Tensor host = wire.twin(x);
    host.copy_(x);
    defaultRailAllreduce(c, host.data_ptr(), static_cast<size_t>(host.numel()),
                         toDType(host.scalar_type(), "all_reduce"), o);
    x.copy_(host, /*non_blocking=*/true);
  };
  if (!compress) {
    dense(rail, shard, op);
    return;
  }
  Compressor& cp = *deps_.compressor;
  const compression::Config& cfg = cp.config();
  at::Tensor f = shard.scalar_type() == at::kFloat ? shard : shard.to(at::kFloat);
  if (cfg.method == compression::Method::kTopK) {
    railCompressedTopK(rail, f, op, cfg.ratio, cp.deviceResidual(key), cp.mutableCounters(), wire,
                       dense);
  } else {
    railCompressedCast(rail, f, op, cfg.method == compression::Method::kBf16, cp.mutableCounters(),
                       wire, dense);
  }
  if (!f.is_same(shard)) shard.copy_(f);
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allreduceMultiHost(std::vector<at::Tensor>& tensors,
                                                               const c10d::AllreduceOptions& opts) {
  const char* op = "all_reduce";
  const at::Tensor& t = singleTensor(tensors, op);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, t.scalar_type(), op);
  const c10::Device device = commonCudaDevice({t}, op);
  TORCH_CHECK(deps_.enqueueHost != nullptr, "distx ", op, ": no worker to run the stages on");
  // Note [GPU compression]: the group switch's gate, on the caller's thread.
  const bool compress =
      deps_.compressor != nullptr &&
      deps_.compressor->compresses(t.scalar_type(), t.device(), static_cast<int64_t>(t.nbytes()),
                                   spec.op, spec.preMul);
  const BucketKey key{reinterpret_cast<uintptr_t>(t.data_ptr()), t.numel()};
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
