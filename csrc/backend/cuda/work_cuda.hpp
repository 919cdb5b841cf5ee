// The c10d::Work of a CUDA collective (Note [CUDA Work]).
//
// Note [CUDA Work]
// A CUDA collective is enqueued on the group's internal stream; `done_` is an
// event recorded after it. The Work is complete when that event has fired (or
// the watchdog failed it). Completion is the CUDA way, as ProcessGroupNCCL's:
//  - wait() / synchronize() make the caller's current stream wait on `done_`
//    (the CPU does not block), then rethrow an error the watchdog recorded;
//    wait(timeout) with an explicit timeout also blocks the CPU up to it.
//  - getFuture() is a c10::ivalue::Future over the Work's CUDA device, marked
//    completed as soon as the collective is enqueued, under a guard that makes
//    the internal stream current: the Future records its own event there, so
//    `fut.wait()` and every `.then()` callback (DDP's comm hooks) are ordered
//    after the collective on the GPU without blocking the CPU.
// The hierarchical path enqueues its last stage from the worker thread, so its
// Work is created before it is enqueued (markEnqueued() then).
#pragma once

#include <ATen/core/ivalue.h>
#include <ATen/cuda/CUDAEvent.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <vector>

namespace distx {

class WorkCuda final : public c10d::Work {
 public:
  WorkCuda(int rank, c10d::OpType opType, uint64_t seq, const char* profilingTitle,
           std::vector<at::Tensor> outputs, std::vector<at::Tensor> inputs, c10::Device device);

  bool isCompleted() override;
  bool isSuccess() const override;
  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;
  void synchronize() override;
  std::vector<at::Tensor> result() override { return outputs_; }
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }
  uint64_t getSequencenumber() const override { return seq_; }
  int sourceRank() const override;

  // Called with the internal stream current, after the collective is enqueued
  // on it: records `done_` and completes the Future (Note [CUDA Work]).
  void markEnqueued();
  // The watchdog's verdict (timeout, NCCL async error) or an enqueue failure.
  void fail(std::exception_ptr error);
  // Non-blocking: the done event fired (false before markEnqueued()).
  bool eventDone();
  void setSourceRank(int rank) { sourceRank_ = rank; }
  // Blocks until markEnqueued() or fail() (then rethrows the error).
  void waitEnqueued();

 private:
  const uint64_t seq_;
  const c10::Device device_;
  std::vector<at::Tensor> outputs_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
  at::cuda::CUDAEvent done_;
  std::atomic<bool> enqueued_{false};
  int sourceRank_ = -1;
};

}  // namespace distx
