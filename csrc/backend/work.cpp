#include "backend/work.hpp"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

namespace distx {

const char* profilingTitle(const char* opName) {
  // c10d::Work hands the title to a RecordFunction that may outlive the call,
  // so titles are interned: the map's nodes are never freed or moved.
  static std::mutex mu;
  static std::unordered_map<std::string, std::string> titles;
  std::lock_guard<std::mutex> lock(mu);
  auto it = titles.find(opName);
  if (it == titles.end()) {
    std::string name = opName;
    const std::string suffix = "_coalesced";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      name.resize(name.size() - suffix.size());
    it = titles.emplace(opName, "distx:" + name).first;
  }
  return it->second.c_str();
}

namespace {

std::vector<at::Tensor> profiled(const std::vector<at::Tensor>& outputs,
                                 std::vector<at::Tensor> inputs) {
  if (inputs.empty()) inputs = outputs;
  for (auto& t : inputs)
    if (t.defined() && t.is_complex()) t = at::view_as_real(t);
  return inputs;
}

}  // namespace

WorkDistx::WorkDistx(int rank, c10d::OpType opType, uint64_t seq, const char* profilingTitle,
                     std::vector<at::Tensor> outputs, std::vector<at::Tensor> inputs)
    : c10d::Work(rank, opType, profilingTitle,
                 std::optional<std::vector<at::Tensor>>(profiled(outputs, std::move(inputs)))),
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

void WorkDistx::complete(const c10::intrusive_ptr<WorkDistx>& work, std::exception_ptr error,
                         CompletionPool& pool) {
  {
    std::lock_guard<std::mutex> lock(work->futureMu_);
    if (!work->futureRequested_) {
      error ? work->finishError(error) : work->finishOk();
      return;
    }
  }
  pool.post([work, error] { error ? work->finishError(error) : work->finishOk(); });
}

}  // namespace distx
