// Note [Shared UCX runtime]
// One UCP context, one MULTI-mode worker and one progress thread per process,
// shared by every distx process group (DESIGN.md "Process groups"): DeviceMesh,
// HSDP and libraries create many groups, and a context + worker + thread set
// per group cost ~3 threads and ~15 fds each. The runtime is created by the
// first group and destroyed when the last one lets go of it.
//
// What a group still owns: its endpoints' use (endpoints are cached here per
// remote worker address, so groups between the same processes share them), its
// tag group id, its completion waker and its abort state (UcxTransport).
//
// Separate matching on one worker: every tag carries a group id (Note [Tag
// layout]) that is unique among the groups alive in each member process. The
// members agree on it at creation: each publishes the ids its process has in
// use (and one past the last it took) next to its worker address, and all pick
// the first id free in every member from the furthest cursor on
// (UcxTransport::allocateGroupId). Creations in one process are serialised.
//
// Note [UCX progress]
// The thread that waits on a request progresses the worker itself while it
// spins (lowest latency); after spinIdle without events it sleeps on its
// group's condition variable and the progress thread takes over, sleeping on
// the worker's event fd (ucp_worker_arm + epoll) when nothing is pending. The
// progress thread also keeps wire-up and rendezvous moving while no
// collective runs and while callers block on the store.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "transport/transport.h"
#include "transport/ucx/ucx_handles.h"

namespace distx::ucx {

class Runtime {
 public:
  // The process's runtime, created on first use. `key` names a separate
  // runtime: only tests use it, to run ranks as threads of one process each
  // with its own worker (tests/cpp/ucx); groups always use the default "".
  static std::shared_ptr<Runtime> acquire(const std::string& key = "");
  // Live runtimes in this process (0 or 1 outside tests; teardown tests use it).
  static int liveCount();
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  ucp_worker_h worker() const { return worker_->get(); }
  const std::string& address() const { return address_; }

  // The endpoint to the worker at `remoteAddress` (created once, shared).
  ucp_ep_h endpoint(const std::string& remoteAddress);

  // Group ids (Note [Tag layout]): serialise creations, publish/read the used
  // set, reserve the chosen id; release when the group goes.
  std::unique_lock<std::mutex> lockGroupCreation() {
    return std::unique_lock<std::mutex>(createMu_);
  }
  std::vector<uint32_t> usedGroupIds();
  uint32_t nextGroupId();  // one past the last id this process reserved
  void reserveGroupId(uint32_t id);
  void releaseGroupId(uint32_t id);

  // Waiters that progress the worker themselves (the progress thread stays out
  // of their way while any is spinning).
  void addSpinner() { spinners_.fetch_add(1, std::memory_order_acq_rel); }
  void removeSpinner() { spinners_.fetch_sub(1, std::memory_order_acq_rel); }

 private:
  Runtime();
  void progressLoop();

  std::shared_ptr<Context> context_;
  std::unique_ptr<Worker> worker_;
  std::string address_;
  int epollFd_ = -1;
  std::thread progressThread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> spinners_{0};

  std::mutex mu_;
  std::map<std::string, ucp_ep_h> endpoints_;  // guarded by mu_
  std::set<uint32_t> usedIds_;                 // guarded by mu_
  uint32_t nextId_ = 0;                        // guarded by mu_
  std::mutex createMu_;
};

}  // namespace distx::ucx
