// Note [Compression switch]
// A distx group may compress its gradient all-reduces (docs/design.md,
// Compression): DISTX_COMPRESS* or torch_distx.Options, resolved once at group
// creation (compression/config.h). c10d does not say which all-reduce is a
// gradient bucket, so the gate below picks by op, dtype, layout and size:
//   compressed  all_reduce / all_reduce_coalesced, op SUM or AVG (not
//               PREMUL_SUM), dense CPU or CUDA float32 (and float16/bfloat16 for
//               top-k: the 16-bit casts would send as many bytes as the
//               tensor has), at least min_bytes, more than one rank;
//   exact       everything else: broadcast, all-gather, reduce-scatter, p2p,
//               object collectives, integer/bool, MIN/MAX/PRODUCT, fp64, sparse.
// Error-feedback residuals are kept per bucket identity = (data pointer of the
// first tensor, element count): DDP's bucket buffers live across steps; a
// bucket whose size changes at that address starts from a zero residual, and
// the least recently used of more than kMaxStates are dropped.
// CUDA tensors reach the gate only from a multi-host group's hierarchical
// all-reduce (Note [GPU compression]): its inter-node stage runs the .cu
// codecs, with the error-feedback residual kept on the device (deviceResidual).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "algorithms/compressed.h"
#include "compression/config.h"

namespace distx {

struct BucketKey {
  uintptr_t ptr = 0;
  int64_t numel = 0;
};

class Compressor {
 public:
  Compressor(compression::Config config, int rank, int size, std::string logPrefix);

  const compression::Config& config() const { return config_; }
  bool enabled() const { return config_.enabled() && size_ > 1; }

  // The gate (caller's thread). Counts the all-reduces it leaves exact.
  bool compresses(at::ScalarType dtype, const at::Device& device, int64_t bytes, ReduceOp op,
                  bool preMul);

  // Worker thread: all-reduces `buf` (contiguous, gated) in place.
  void run(CollectiveContext& ctx, at::Tensor& buf, ReduceOp op, BucketKey key);

  const CompressionCounters& counters() const { return counters_; }

  // Worker thread, for the CUDA rail stage (Note [GPU compression]): the
  // counters to update, the bucket's device residual (null without error
  // feedback; an undefined tensor on first use, the caller sizes it), and the
  // logging that follows every compressed all-reduce.
  CompressionCounters& mutableCounters() { return counters_; }
  at::Tensor* deviceResidual(BucketKey key);
  void afterRun(const CollectiveContext& ctx);

 private:
  compression::TensorState* stateFor(BucketKey key);

  const compression::Config config_;
  const int rank_, size_;
  const std::string logPrefix_;
  CompressionCounters counters_;
  bool loggedDensity_ = false, loggedNonFinite_ = false;  // worker thread only

  static constexpr size_t kMaxStates = 256;
  struct Entry {
    compression::TensorState state;
    at::Tensor device;  // the CUDA twin of state.residual
    std::list<uintptr_t>::iterator lru;
  };
  std::unordered_map<uintptr_t, Entry> states_;  // worker thread only
  std::list<uintptr_t> lru_;                     // most recent first
};

}  // namespace distx
