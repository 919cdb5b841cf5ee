// UCX transport: one process group's view of the process-wide UCX runtime
// (Note [Shared UCX runtime] in ucx_runtime.h): endpoints to its members, a
// tag group id unique among the live groups of every member, its own waiters
// and its own abort state.
//
// Endpoints use UCP_ERR_HANDLING_MODE_NONE: PEER mode would silently move
// shared-memory traffic to TCP (UCX 1.13). Dead peers are therefore detected
// above the transport (deadlines now; a liveness watchdog calls abort()).
//
// Teardown: the group releases its id and its reference to the runtime; the
// runtime flush-closes the endpoints when the last group goes. Requests still
// in flight (after a timeout or abort) keep their state alive on their own
// (Note [Request ownership]); receives are cancelled.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transport/transport.h"
#include "transport/ucx/ucx_runtime.h"

namespace distx::ucx {

// Wakes a group's sleeping waiters from UCX callbacks. Shared with every
// request's state, so a callback that runs on another group's thread after
// this group is gone still has something valid to notify.
struct Waker {
  std::mutex mu;
  std::condition_variable cv;
  // Requests destroyed before UCX finished them (Note [Parked buffers]);
  // counted up before the owner lets go, down when UCX finishes one.
  std::atomic<int> abandoned{0};
  void notify() {
    { std::lock_guard<std::mutex> lock(mu); }
    cv.notify_all();
  }
};

class UcxTransport final : public Transport {
 public:
  // Exchanges worker addresses (and used group ids) through `bootstrap`,
  // connects to every peer and agrees on the group id. `runtimeKey` picks a
  // separate runtime (tests only, Runtime::acquire).
  UcxTransport(int rank, int size, Bootstrap& bootstrap, Deadline deadline,
               const std::string& runtimeKey = "");
  ~UcxTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  RequestPtr send(int dst, uint64_t tag, const void* buf, size_t bytes) override;
  RequestPtr recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) override;
  void wait(Request& req, Deadline deadline, const std::string& what) override;
  void abort(const std::string& reason) override;
  void checkAlive(int peer, const std::string& what) override;

  int abandonedRequests() const override {
    return waker_->abandoned.load(std::memory_order_acquire);
  }
  uint32_t groupId() const override { return groupId_; }
  void shutdown() override;
  // cudaMemorySupported() of ucx_memory.h: UCX built with CUDA.
  bool cudaMemory() const override;
  std::string describe() const override { return "UCX " + version(); }

  static std::string version();

 private:
  void allocateGroupId(Bootstrap& bootstrap);

  const int rank_;
  const int size_;
  const std::chrono::microseconds spinIdle_;
  std::shared_ptr<Runtime> runtime_;
  std::vector<ucp_ep_h> endpoints_;  // owned by the runtime
  std::vector<bool> net_;            // peer r is on another host (Note [Network worker])
  bool anyNet_ = false;
  uint32_t groupId_ = 0;
  std::atomic<bool> idHeld_{false};
  std::shared_ptr<Waker> waker_;

  std::mutex mu_;
  std::atomic<bool> aborted_{false};
  std::string abortReason_;  // guarded by mu_
};

}  // namespace distx::ucx
