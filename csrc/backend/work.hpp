// The c10d::Work a distx collective returns. Its Future completes with the
// output tensors (List[Tensor]) — DDP and every comm hook chain on it — or
// with the error that failed the collective.
#pragma once

#include <ATen/core/ivalue.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <atomic>
#include <mutex>
#include <vector>

#include "backend/completion_pool.hpp"

namespace distx {

// The profiler event name of an op: "distx:<opName>", with a "_coalesced"
// suffix dropped so the names match gloo's ("gloo:all_reduce" for both).
// The returned pointer stays valid for the life of the process.
const char* profilingTitle(const char* opName);

class WorkDistx final : public c10d::Work {
 public:
  // `inputs` (default: `outputs`) are the tensors a profiler event records;
  // complex ones are recorded as their real views, as Gloo does.
  WorkDistx(int rank, c10d::OpType opType, uint64_t seq, const char* profilingTitle,
            std::vector<at::Tensor> outputs, std::vector<at::Tensor> inputs = {});

  std::vector<at::Tensor> result() override { return outputs_; }
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override {
    std::lock_guard<std::mutex> lock(futureMu_);
    futureRequested_ = true;
    return future_;
  }
  uint64_t getSequencenumber() const override { return seq_; }
  // Polls briefly before blocking: a small collective often finishes within
  // microseconds, sooner than a sleeping thread can be woken.
  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;

  // Completes `work` (with `error` if set): inline while nobody has asked for
  // its Future, so no callback can be chained on it and no user code runs
  // here; else on `pool` (Note [Completion threads]). The check and the inline
  // completion hold the lock getFuture() takes, so a getFuture() racing with
  // them returns an already completed Future (its callbacks then run on the
  // caller's thread, as torch does for completed futures).
  static void complete(const c10::intrusive_ptr<WorkDistx>& work, std::exception_ptr error,
                       CompletionPool& pool);

  // Receives only: the sender's rank in the group (recv from any source
  // learns it from the message), -1 until the receive completed.
  int sourceRank() const override;
  void setSourceRank(int rank) { sourceRank_.store(rank, std::memory_order_release); }

 private:
  const uint64_t seq_;
  std::atomic<int> sourceRank_{-1};
  std::mutex futureMu_;
  bool futureRequested_ = false;  // guarded by futureMu_
  void finishOk();
  void finishError(std::exception_ptr error);
  std::vector<at::Tensor> outputs_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

}  // namespace distx
