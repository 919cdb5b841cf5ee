// Note [Compression switch] (compressor.hpp): the gate, the bucket states and
// the counters of a group's compressed all-reduces.
#include "backend/compressor.hpp"

#include <mutex>
#include <set>

#include "backend/torch_parallel.hpp"
#include "common/logging.h"

namespace distx {
namespace {

// Rank 0 says once per process and setting what is in force.
void logConfigOnce(const compression::Config& c, int rank, const std::string& prefix) {
  static std::mutex mu;
  static std::set<std::string> said;
  if (rank != 0 || !c.enabled()) return;
  const std::string what = c.describe() + " (from " + c.source + ")";
  std::lock_guard<std::mutex> lock(mu);
  if (!said.insert(what).second) return;
  DISTX_LOG(LogLevel::kWarn, prefix,
            "compressing floating SUM/AVG all-reduces of this group: ", what);
}

}  // namespace

Compressor::Compressor(compression::Config config, int rank, int size, std::string logPrefix)
    : config_(std::move(config)), rank_(rank), size_(size), logPrefix_(std::move(logPrefix)) {
  logConfigOnce(config_, rank_, logPrefix_);
}

bool Compressor::compresses(at::ScalarType dtype, const at::Device& device, int64_t bytes,
                            ReduceOp op, bool preMul) {
  if (!enabled()) return false;
  const bool floating = dtype == at::kFloat || (config_.method == compression::Method::kTopK &&
                                                (dtype == at::kHalf || dtype == at::kBFloat16));
  const bool ok = (device.is_cpu() || device.is_cuda()) && floating && !preMul &&
                  (op == ReduceOp::kSum || op == ReduceOp::kAvg) &&
                  bytes >= static_cast<int64_t>(config_.minBytes);
  if (!ok) counters_.exactCalls.fetch_add(1, std::memory_order_relaxed);
  return ok;
}

compression::TensorState* Compressor::stateFor(BucketKey key) {
  if (config_.method != compression::Method::kTopK || !config_.errorFeedback) return nullptr;
  auto it = states_.find(key.ptr);
  if (it != states_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return &it->second.state;  // a size change resets it (allreduceCompressedTopK)
  }
  if (states_.size() >= kMaxStates) {
    states_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(key.ptr);
  auto& e = states_[key.ptr];
  e.lru = lru_.begin();
  return &e.state;
}

at::Tensor* Compressor::deviceResidual(BucketKey key) {
  if (!stateFor(key)) return nullptr;
  return &states_.at(key.ptr).device;
}

void Compressor::run(CollectiveContext& ctx, at::Tensor& buf, ReduceOp op, BucketKey key) {
  CompressSpec spec;
  spec.method = config_.method;
  spec.ratio = config_.ratio;
  spec.errorFeedback = config_.errorFeedback;
  spec.denseElemBytes = buf.element_size();
  spec.par = &torchParallel();
  compression::TensorState* state = stateFor(key);
  if (buf.scalar_type() == at::kFloat) {
    allreduceCompressedGroup(ctx, buf.data_ptr<float>(), buf.numel(), op, config_.scope, spec,
                             state, counters_);
  } else {
    at::Tensor f = buf.to(at::kFloat);
    allreduceCompressedGroup(ctx, f.data_ptr<float>(), f.numel(), op, config_.scope, spec, state,
                             counters_);
    buf.copy_(f);
  }
  afterRun(ctx);
}

void Compressor::afterRun(const CollectiveContext& ctx) {
  const std::string prefix = detail::concat(logPrefix_, " seq ", ctx.seq, "]");
  if (!loggedDensity_ && counters_.fallbackDensity.load() > 0) {
    loggedDensity_ = true;
    DISTX_LOG(LogLevel::kWarn, prefix, "top-k ratio ", config_.ratio,
              " x ranks of the compressed stage (hosts, across hosts) >= 1: sent dense (sparse "
              "would send more bytes); counted in compression_stats()['fallbacks']['density'], "
              "logged once");
  }
  if (!loggedNonFinite_ && counters_.fallbackNonFinite.load() > 0) {
    loggedNonFinite_ = true;
    DISTX_LOG(LogLevel::kWarn, prefix, compression::methodName(config_.method),
              " all-reduce saw a value beyond the 16-bit range or NaN/inf: redone dense in "
              "float32; counted in compression_stats()['fallbacks']['non_finite'], logged once");
  }
  const uint64_t calls = counters_.calls.load();
  if (config_.logEvery && calls % config_.logEvery == 0) {
    const double wire = static_cast<double>(counters_.wireBytes.load());
    DISTX_LOG(LogLevel::kInfo, prefix, "compression ", compression::methodName(config_.method),
              ": ", calls, " all-reduces, ", counters_.denseBytes.load(), " B dense -> ",
              counters_.wireBytes.load(), " B sent (ratio ",
              wire > 0 ? counters_.denseBytes.load() / wire : 0.0, "), fallbacks density ",
              counters_.fallbackDensity.load(), " non-finite ", counters_.fallbackNonFinite.load(),
              ", codec ", counters_.codecNanos.load() / 1e6, " ms");
  }
}

}  // namespace distx
