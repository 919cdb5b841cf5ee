// UCX transport: one UCP context + MULTI-mode worker per process group.
//
// Note [UCX progress]
// The thread that waits on a request progresses the worker itself while it
// spins (lowest latency); after kSpinIdle without events it sleeps on a
// condition variable and the progress thread takes over, sleeping on the
// worker's event fd (ucp_worker_arm + epoll) when nothing is pending. The
// progress thread also keeps wire-up and rendezvous moving while no
// collective runs and while the caller blocks on the store.
//
// Endpoints use UCP_ERR_HANDLING_MODE_NONE: PEER mode would silently move
// shared-memory traffic to TCP (UCX 1.13). Dead peers are therefore detected
// above the transport (deadlines now; a liveness watchdog calls abort()).
//
// Teardown (shutdown): store barrier -> flush-close every endpoint while the
// progress thread runs -> store barrier -> stop thread -> destroy worker. Each
// step is bounded; after abort() the barriers are skipped.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "transport/transport.h"
#include "transport/ucx/ucx_handles.h"

namespace distx::ucx {

class UcxTransport final : public Transport {
 public:
  // Exchanges worker addresses through `bootstrap` and connects to every peer.
  UcxTransport(int rank, int size, Bootstrap& bootstrap, Deadline deadline);
  ~UcxTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  RequestPtr send(int dst, uint64_t tag, const void* buf, size_t bytes) override;
  RequestPtr recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) override;
  void wait(Request& req, Deadline deadline, const std::string& what) override;
  void abort(const std::string& reason) override;

  // Orderly, collective teardown (see the note above). Safe to call twice.
  void shutdown(Bootstrap* bootstrap, Deadline deadline);

  // Called from UCX callbacks.
  void notifyCompletion();

  static std::string version();

 private:
  void progressLoop();
  void storeBarrier(Bootstrap& bootstrap, const std::string& key, Deadline deadline);
  void stopProgressThread();

  const int rank_;
  const int size_;
  const std::chrono::microseconds spinIdle_;
  std::shared_ptr<Context> context_;
  std::unique_ptr<Worker> worker_;
  std::vector<ucp_ep_h> endpoints_;

  int epollFd_ = -1;
  std::thread progressThread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> spinners_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> aborted_{false};
  std::string abortReason_;  // guarded by mu_
  bool shutDown_ = false;
};

}  // namespace distx::ucx
