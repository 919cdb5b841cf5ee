#include "backend/cuda/work_cuda.hpp"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <thread>

#include "backend/work.hpp"

namespace distx {

WorkCuda::WorkCuda(int rank, c10d::OpType opType, uint64_t seq, const char* profilingTitle,
                   std::vector<at::Tensor> outputs, std::vector<at::Tensor> inputs,
                   c10::Device device)
    : c10d::Work(rank, opType, profilingTitle,
                 std::optional<std::vector<at::Tensor>>(inputs.empty() ? outputs : inputs)),
      seq_(seq),
      device_(device),
      outputs_(std::move(outputs)),
      future_(c10::make_intrusive<c10::ivalue::Future>(
          c10::ListType::create(c10::TensorType::get()), std::vector<c10::Device>{device})) {}

void WorkCuda::markEnqueued() {
  done_.record(c10::cuda::getCurrentCUDAStream(device_.index()));
  // Records the Future's event on the current (internal) stream.
  future_->markCompleted(c10::IValue(outputs_));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    enqueued_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  // The profiler's event spans the host side of the op, as for ProcessGroupNCCL.
  if (recordFunctionEndCallback_) {
    recordFunctionEndCallback_();
    recordFunctionEndCallback_ = nullptr;
  }
}

void WorkCuda::fail(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (completed_) return;
    completed_ = true;
    exception_ = error;
  }
  cv_.notify_all();
  // A Future not yet completed (the hierarchical path failed before its last
  // stage) carries the error to DDP; one already completed cannot change.
  if (!future_->completed()) future_->setError(error);
}

bool WorkCuda::eventDone() {
  if (!enqueued_.load(std::memory_order_acquire)) return false;
  return done_.query();
}

bool WorkCuda::isCompleted() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (completed_) return true;
  }
  return eventDone();
}

bool WorkCuda::isSuccess() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return exception_ == nullptr;
}

void WorkCuda::waitEnqueued() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return enqueued_.load(std::memory_order_acquire) || completed_; });
  if (exception_) std::rethrow_exception(exception_);
}

void WorkCuda::synchronize() {
  waitEnqueued();
  const c10::cuda::CUDAGuard guard(device_);
  done_.block(c10::cuda::getCurrentCUDAStream(device_.index()));
}

bool WorkCuda::wait(std::chrono::milliseconds timeout) {
  synchronize();
  if (timeout != kNoTimeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!isCompleted()) {
      TORCH_CHECK_WITH(DistBackendError, std::chrono::steady_clock::now() < until,
                       "distx: wait(timeout=", timeout.count(), " ms) for ",
                       c10d::opTypeToString(opType_), " seq ", seq_, " timed out");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (exception_) std::rethrow_exception(exception_);
  return true;
}

int WorkCuda::sourceRank() const {
  TORCH_CHECK(opType_ == c10d::OpType::RECV || opType_ == c10d::OpType::RECVANYSOURCE,
              "distx: sourceRank() is only defined for a recv");
  return sourceRank_;
}

}  // namespace distx
