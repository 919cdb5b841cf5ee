// The device-neutral hierarchical all-reduce (Note [Device kernels]): the
// schedule of the CUDA path's multi-host all-reduce (Note [Multi-host
// CUDA]), written against DeviceKernels and IntraNode so that the C++ tests
// run it with CpuKernels and RingIntraNode.
#pragma once

#include <cstddef>

#include "algorithms/algorithm.h"
#include "algorithms/compressed.h"
#include "algorithms/device_kernels.h"

namespace distx {

// The rail stage of allreduceHierarchicalDevice: dense (compress null), or
// the group's compression switch on this rank's shard (Note [GPU
// compression]) with its counters and top-k residual.
struct DeviceRail {
  const CompressSpec* compress = nullptr;
  CompressionCounters* counters = nullptr;  // set with compress
  ResidualFn residual;                      // top-k error feedback; empty = none
};

// allreduce_rail_direct.cpp: the dense rail where the transport takes device
// memory (k.transportTakesDevice()): scatter the segments, reduce this
// rank's segment with the kernels in rank order, ring all-gather. In place
// on data[count] (device memory); AVG divides by rail.size().
void railDenseDirect(CollectiveContext& rail, DeviceKernels& k, void* data, size_t count, DType dt,
                     ReduceOp op);

// allreduce_hierarchical_device.cpp: the dense rail through a host twin,
// defaultRailAllreduce (the CPU path's flat rules) on the host copy.
void railDenseStaged(CollectiveContext& rail, DeviceKernels& k, void* data, size_t count, DType dt,
                     ReduceOp op);
// The rail stage, in place on data[count] (device memory): the one choice
// between the dense rails (direct where the transport takes device memory,
// staged otherwise: Note [CUDA-aware rail]) and the compressed ones
// (allreduceCompressed on a float32 copy for float16/bfloat16 data, with the
// dense rail as its fallback). Leaves every rank of the rail bit-identical.
void railAllreduceDevice(CollectiveContext& rail, DeviceKernels& k, void* data, size_t count,
                         DType dt, ReduceOp op, const DeviceRail& spec = {});
// In place on data[count] (device memory) over ctx (the group's context,
// with a uniform topology; the node's ranks are intra's, local rank l is
// intra.rank()). InvalidArgument on uneven hosts (the caller stages those
// onto the CPU path).
void allreduceHierarchicalDevice(CollectiveContext& ctx, DeviceKernels& k, IntraNode& intra,
                                 void* data, size_t count, DType dt, ReduceOp op,
                                 const DeviceRail& rail = {});

}  // namespace distx
