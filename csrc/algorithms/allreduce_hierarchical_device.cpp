// Hierarchical all-reduce of device memory across hosts (Note [Multi-host
// CUDA]; Note [Device kernels]): the CUDA path's multi-host all-reduce,
// device-neutral, so that the C++ tests run it with the CPU kernels.
//
// Schedule, n elements, g ranks on each of N hosts (uniform), rank at local
// rank l:
//   1. intra   reduce-scatter over the node (IntraNode: NCCL over the host's
//              communicator on CUDA, rings in the tests): local rank l owns
//              shard l (n/g elements, the vector zero-padded to g shards);
//   2. inter   the shards of local rank l on every host form rail l; they are
//              all-reduced on a context narrowed to the rail (phase 2,
//              railAllreduceDevice): through a host copy with the flat size
//              rules of select.cpp (staged), or, where every rank's transport
//              takes device memory, straight from device memory with the
//              reduction in the device's kernels (railDenseDirect; Note
//              [CUDA-aware rail]); with the group's compression switch on, the
//              compressed all-reduces of compressed.h compress this stage only
//              (Note [GPU compression]);
//   3. intra   all-gather of the shards back into the whole vector.
// AVG runs as SUM and divides the owned shard once by P after stage 2 (integer
// AVG truncates, as the CPU path); dividing the shard before the all-gather
// gives the same bits as dividing the whole vector after it, on 1/g of the
// elements. PREMUL_SUM arrives as SUM of pre-scaled inputs (the backend scales).
// Invariant: every rank ends with bit-identical results: stage 2 leaves every
// rank of a rail the same bytes, and stage 3 only copies.
// Cost per rank: intra 2(g-1)/g·N bytes (NCCL on CUDA); inter 2(N-1)/N·n/g
// elements over the transport (ring rail; the direct rail sends as much),
// plus, staged, one device-to-host and one host-to-device copy of n/g.
#include <vector>

#include "algorithms/hierarchical_device.h"

namespace distx {
namespace {

// Tag phase of the rail stage (Note [Narrowed context]); RingIntraNode uses
// 1 and 3, as allreduce_hierarchical.cpp.
constexpr uint32_t kRailPhase = 2;

}  // namespace

void railDenseStaged(CollectiveContext& rail, DeviceKernels& k, void* data, size_t count, DType dt,
                     ReduceOp op) {
  if (rail.size() == 1 || count == 0) return;
  WireBuffer host(k, data, count * dtypeSize(dt));
  host.out();  // the device-to-host copy waits for the stages before it
  defaultRailAllreduce(rail, host.wire(), count, dt, op);
  host.in();
}

void railAllreduceDevice(CollectiveContext& rail, DeviceKernels& k, void* data, size_t count,
                         DType dt, ReduceOp op, const DeviceRail& spec) {
  const RailAllreduceFn dense = [&k](CollectiveContext& c, void* d, size_t n, DType t, ReduceOp o) {
    if (k.transportTakesDevice()) {
      railDenseDirect(c, k, d, n, t, o);
    } else {
      railDenseStaged(c, k, d, n, t, o);
    }
  };
  if (!spec.compress) {
    dense(rail, data, count, dt, op);
    return;
  }
  DISTX_CHECK(spec.counters, InvalidArgument, "compressed rail: no counters");
  DISTX_CHECK(dt == DType::kFloat32 || dt == DType::kFloat16 || dt == DType::kBFloat16,
              InvalidArgument, "compressed rail all-reduce: expected floating data, got ",
              dtypeName(dt));
  const CompressedRun run{k, *spec.counters, dense, dtypeSize(dt), spec.residual};
  if (dt == DType::kFloat32) {
    allreduceCompressed(rail, static_cast<float*>(data), count, op, *spec.compress, run);
    return;
  }
  DeviceBuffer f = k.alloc(count * sizeof(float));
  k.convert(f.bytes(), DType::kFloat32, data, dt, count);
  allreduceCompressed(rail, f.as<float>(), count, op, *spec.compress, run);
  k.convert(data, dt, f.bytes(), DType::kFloat32, count);
}

void allreduceHierarchicalDevice(CollectiveContext& ctx, DeviceKernels& k, IntraNode& intra,
                                 void* data, size_t count, DType dt, ReduceOp op,
                                 const DeviceRail& rail) {
  const Topology topo = contextTopology(ctx);
  DISTX_CHECK(topo.uniform(), InvalidArgument,
              "hierarchical device all-reduce: hosts hold different numbers of ranks");
  const int me = ctx.rank(), P = ctx.size();
  const int g = topo.ranksPerNode(), l = topo.localRank(me);
  DISTX_CHECK(intra.size() == g && intra.rank() == l, InvalidArgument,
              "hierarchical device all-reduce: the intra-node stages see rank ", intra.rank(),
              " of ", intra.size(), ", the topology local rank ", l, " of ", g);
  const ReduceOp stageOp = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  const size_t elem = dtypeSize(dt);
  const size_t shard = (count + g - 1) / g;
  auto* buf = static_cast<uint8_t*>(data);
  DeviceBuffer padded;
  if (shard * g != count) {
    padded = k.alloc(shard * g * elem);
    k.copy(padded.bytes(), data, count * elem);
    k.zero(padded.bytes() + count * elem, (shard * g - count) * elem);
    buf = padded.bytes();
  }
  const bool intraStages = g > 1 && shard > 0;
  if (intraStages) intra.reduceScatter(buf, shard, dt, stageOp);
  uint8_t* mine = buf + l * shard * elem;
  CollectiveContext railCtx = ctx.narrow(topo.rail(l), kRailPhase);
  railAllreduceDevice(railCtx, k, mine, shard, dt, stageOp, rail);
  if (op == ReduceOp::kAvg && shard > 0) k.divide(mine, shard, dt, P);
  if (intraStages) intra.allGather(buf, shard, dt);
  if (padded.bytes()) k.copy(data, buf, count * elem);
}

}  // namespace distx
