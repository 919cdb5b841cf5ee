// The kernels and intra-node stages a device-neutral schedule runs on: what
// the hierarchical all-reduce and the compressed rails need from a device, so
// that one schedule serves host memory and GPU memory alike.
//
// Note [Device kernels]
// The hierarchical all-reduce of CUDA tensors (Note [Multi-host CUDA]) and
// its compressed rails (Note [GPU compression]) used to be written a second
// time in torch ops in csrc/backend/cuda/, with their own reduce-op switch,
// out of reach of the ranks-as-threads tests. They are now one schedule each
// in algorithms/ (allreduce_hierarchical_device.cpp, allreduce_rail_direct.cpp,
// allreduce_compressed_cast.cpp, allreduce_compressed_topk.cpp), written
// against two small interfaces:
//   DeviceKernels  element-wise work on the device's memory, enqueued in
//                  order (on CUDA: the internal stream): copy, zero, reduce
//                  (acc = acc op b), divide (AVG), dtype conversion, the
//                  16-bit casts and top-k; scratch allocation (an owning
//                  handle); and the two points where the transport meets
//                  device memory: transportTakesDevice() says whether the
//                  transport may be handed device pointers at all (else the
//                  schedule stages through host twins, toHost/fromHost), and
//                  syncForTransport() makes what the kernels wrote readable
//                  by the transport before a send;
//   IntraNode      the node's reduce-scatter and all-gather (on CUDA: NCCL over
//                  the host's communicator; on the CPU: rings over the node).
// Implementations: CpuKernels below (device_kernels_cpu.cpp: common/reduce.h
// and the compression/ codecs, host memory, sync a no-op), RingIntraNode
// (device_kernels_cpu.cpp); CudaKernels and NcclIntraNode in
// csrc/backend/cuda/rail_cuda.hpp. The C++ tests run the CUDA path's
// schedules with CpuKernels, in both rail modes (CpuKernelsOptions::stage).
// What is left in backend/cuda/ is CUDA only: streams, events, NCCL, memory,
// the DISTX_UCX_CUDA agreement and the Work.
// The CPU path runs the same compressed all-reduces with CpuKernels (the
// arena is the context's scratch: the same messages, memory and codec timing
// as before); its hierarchical all-reduce stays allreduce_hierarchical.cpp
// (shared staging, the pipelined split-rail), whose staged rail the device
// schedule matches bit for bit where g divides the count.
// Decisions: the intra-node stages work in place on the padded vector (NCCL's
// in-place reduce-scatter and all-gather: no shard buffer); a hierarchical
// AVG divides the owned shard before the all-gather (the same bits as
// dividing the vector after it); the rail is phase 2, as on the CPU path.
// Contract: calls take raw device pointers and element counts; kernels run in
// call order, and a host-visible result (countNonFinite16, toHost) waits for
// everything before it. Buffers stay valid while their handle lives; one the
// transport used may still be read by work already enqueued when the handle
// goes, and the implementation must keep it until that work is done.
// Alternatives: a torch-free "tensor" type was more than the schedules need
// (they work on flat segments); passing the CUDA stream as a void* through the
// algorithms would still have needed the kernels behind it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "algorithms/algorithm.h"
#include "compression/method.h"
#include "compression/parallel.h"

namespace distx {

// Memory a DeviceKernels handed out, freed (or returned to its pool) when the
// last copy of the handle goes.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(void* data, std::shared_ptr<void> owner) : data_(data), owner_(std::move(owner)) {}
  uint8_t* bytes() const { return static_cast<uint8_t*>(data_); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  void reset() {
    data_ = nullptr;
    owner_.reset();
  }

 private:
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

// A run of 16-bit codes in device memory.
struct CodeRun {
  const uint16_t* codes;
  size_t count;
};

class DeviceKernels {
 public:
  virtual ~DeviceKernels() = default;

  // Device memory of `bytes` (uninitialised, 16-byte aligned).
  virtual DeviceBuffer alloc(size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  // acc[i] = acc[i] op b[i] (op is not AVG: SUM, then divide).
  virtual void reduce(void* acc, const void* b, size_t count, DType dt, ReduceOp op) = 0;
  // data[i] /= divisor; integers truncate (finishAvg).
  virtual void divide(void* data, size_t count, DType dt, int divisor) = 0;
  // dst = src converted from `from` to `to` (float32 <-> float16 / bfloat16,
  // round to nearest even; equal types copy).
  virtual void convert(void* dst, DType to, const void* src, DType from, size_t count) = 0;

  // The 16-bit casts of a cast method m (fp16, bf16: the device's
  // castKernels(m), Note [Codec vocabulary]): dst = cast(src * scale);
  // dst = float(src).
  virtual void encode16(compression::Method m, const float* src, uint16_t* dst, size_t n,
                        float scale) = 0;
  virtual void decode16(compression::Method m, const uint16_t* src, float* dst, size_t n) = 0;
  // The NaN/inf codes in `runs`; waits for the count.
  virtual size_t countNonFinite16(compression::Method m, const std::vector<CodeRun>& runs) = 0;
  // topk.h with scale 1: the k largest |x (+ residual)| as pairs; residual
  // (null: no error feedback) keeps the rest.
  virtual void encodeTopK(const float* x, float* residual, size_t n, size_t k, int32_t* pairs) = 0;
  // dense = zeros, then += scale·value for each of `runs` runs of runPairs
  // pairs, in order.
  virtual void decodeTopK(const int32_t* pairs, size_t runs, size_t runPairs, size_t n, float scale,
                          float* dense) = 0;

  // Whether the transport may read and write this device's memory itself.
  virtual bool transportTakesDevice() const = 0;
  // Before the transport reads device memory that kernels wrote (direct).
  virtual void syncForTransport() = 0;
  // Staged: host memory the transport reads and writes, and the copies to and
  // from it; toHost is done when it returns, fromHost is ordered before every
  // later kernel (the host buffer is kept as the contract above says).
  virtual DeviceBuffer allocHost(size_t bytes) = 0;
  virtual void toHost(void* host, const void* dev, size_t bytes) = 0;
  virtual void fromHost(void* dev, const void* host, size_t bytes) = 0;
  // True when kernels are done when they return (codec time is measurable).
  virtual bool synchronous() const = 0;
};

// A buffer the transport may use for `bytes` of device memory at `dev`: dev
// itself where the transport takes device memory, else a host twin (Note
// [CUDA-aware rail]: direct and staged).
class WireBuffer {
 public:
  WireBuffer(DeviceKernels& k, void* dev, size_t bytes);
  uint8_t* wire() const { return wire_; }
  // Makes what kernels wrote into dev[off, off+len) readable by the transport
  // in wire(); done when it returns.
  void out(size_t off = 0, size_t len = SIZE_MAX);
  // Makes what the transport wrote into wire()[off, off+len) visible to the
  // kernels that follow, at dev.
  void in(size_t off = 0, size_t len = SIZE_MAX);

 private:
  DeviceKernels& k_;
  uint8_t* const dev_;
  const size_t bytes_;
  const bool staged_;
  DeviceBuffer host_;
  uint8_t* wire_;
};

inline WireBuffer::WireBuffer(DeviceKernels& k, void* dev, size_t bytes)
    : k_(k), dev_(static_cast<uint8_t*>(dev)), bytes_(bytes), staged_(!k.transportTakesDevice()) {
  if (staged_) host_ = k.allocHost(bytes);
  wire_ = staged_ ? host_.bytes() : dev_;
}

inline void WireBuffer::out(size_t off, size_t len) {
  if (!staged_) {
    k_.syncForTransport();  // direct: the transport reads dev itself
    return;
  }
  len = std::min(len, bytes_ - std::min(off, bytes_));
  if (len) k_.toHost(wire_ + off, dev_ + off, len);
}

inline void WireBuffer::in(size_t off, size_t len) {
  if (!staged_) return;  // direct: the transport wrote dev itself
  len = std::min(len, bytes_ - std::min(off, bytes_));
  if (len) k_.fromHost(dev_ + off, wire_ + off, len);
}

// The node's stages of a hierarchical all-reduce: `data` holds size() blocks
// of `shard` elements.
class IntraNode {
 public:
  virtual ~IntraNode() = default;
  virtual int size() const = 0;
  virtual int rank() const = 0;  // this rank's block
  // Block rank() ends with the node's reduction of it (op not AVG); the other
  // blocks are left undefined (implementations may reduce in place).
  virtual void reduceScatter(void* data, size_t shard, DType dt, ReduceOp op) = 0;
  // Block rank() holds this rank's shard; every block ends with its owner's.
  virtual void allGather(void* data, size_t shard, DType dt) = 0;
};

// --- host memory (device_kernels_cpu.cpp) -----------------------------------

struct CpuKernelsOptions {
  const compression::Parallel* par = nullptr;  // codec threads (default: defaultParallel())
  // alloc() lends this buffer (grown as needed) while no other buffer holds
  // it: the context's scratch, reused across calls; null = fresh memory.
  std::vector<uint8_t>* arena = nullptr;
  // As a device whose memory the transport cannot take: the schedules stage
  // through host twins (the tests run both rail modes on the CPU).
  bool stage = false;
};

class CpuKernels final : public DeviceKernels {
 public:
  explicit CpuKernels(CpuKernelsOptions options = {});
  DeviceBuffer alloc(size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void reduce(void* acc, const void* b, size_t count, DType dt, ReduceOp op) override;
  void divide(void* data, size_t count, DType dt, int divisor) override;
  void convert(void* dst, DType to, const void* src, DType from, size_t count) override;
  void encode16(compression::Method m, const float* src, uint16_t* dst, size_t n,
                float scale) override;
  void decode16(compression::Method m, const uint16_t* src, float* dst, size_t n) override;
  size_t countNonFinite16(compression::Method m, const std::vector<CodeRun>& runs) override;
  void encodeTopK(const float* x, float* residual, size_t n, size_t k, int32_t* pairs) override;
  void decodeTopK(const int32_t* pairs, size_t runs, size_t runPairs, size_t n, float scale,
                  float* dense) override;
  bool transportTakesDevice() const override { return !options_.stage; }
  void syncForTransport() override {}
  DeviceBuffer allocHost(size_t bytes) override;
  void toHost(void* host, const void* dev, size_t bytes) override { copy(host, dev, bytes); }
  void fromHost(void* dev, const void* host, size_t bytes) override { copy(dev, host, bytes); }
  bool synchronous() const override { return true; }

 private:
  const compression::Parallel& par() const;
  DeviceBuffer fresh(size_t bytes);

  const CpuKernelsOptions options_;
  std::shared_ptr<bool> arenaLent_ = std::make_shared<bool>(false);
};

// The node's stages as rings over ctx.narrow(node ranks) (phase 1 for the
// reduce-scatter, 3 for the all-gather, as allreduce_hierarchical.cpp).
// ctx: the group's context, with its topology; the node's ranks in order.
class RingIntraNode final : public IntraNode {
 public:
  explicit RingIntraNode(const CollectiveContext& ctx);
  int size() const override { return static_cast<int>(node_.size()); }
  int rank() const override { return rank_; }
  void reduceScatter(void* data, size_t shard, DType dt, ReduceOp op) override;
  void allGather(void* data, size_t shard, DType dt) override;

 private:
  const CollectiveContext ctx_;
  std::vector<int> node_;
  int rank_ = 0;
};

}  // namespace distx
