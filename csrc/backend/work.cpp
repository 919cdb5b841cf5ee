#include "backend/work.hpp"

#include <c10/util/Exception.h>

#include <thread>

namespace distx {

WorkDistx::WorkDistx(int rank, c10d::OpType opType, uint64_t seq, const char* profilingTitle,
                     std::vector<at::Tensor> outputs)
    : c10d::Work(rank, opType, profilingTitle, std::optional<std::vector<at::Tensor>>(outputs)),
      seq_(seq),
      outputs_(std::move(outputs)),
      future_(
          c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()))) {
}

bool WorkDistx::wait(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  while (!isCompleted() && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  return c10d::Work::wait(timeout);
}

int WorkDistx::sourceRank() const {
  TORCH_CHECK(opType_ == c10d::OpType::RECV || opType_ == c10d::OpType::RECVANYSOURCE,
              "distx: sourceRank() is only defined for the Work of a recv");
  return sourceRank_.load(std::memory_order_acquire);
}

void WorkDistx::finishOk() {
  future_->markCompleted(c10::IValue(outputs_));
  finish();
}

void WorkDistx::finishError(std::exception_ptr error) {
  future_->setError(error);
  finish(error);
}

}  // namespace distx
