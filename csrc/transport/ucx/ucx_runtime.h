// Note [Shared UCX runtime]
// One runtime per process (its two UCP contexts and MULTI-mode workers, Note
// [Network worker], and one progress thread), shared by every distx process group (docs/design.md
// "Process groups"): DeviceMesh, HSDP and libraries create many groups, and a context + worker +
// thread set per group cost ~3 threads and ~15 fds each. The runtime is created by the first group
// and destroyed when the last one lets go of it.
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
// Note [Network worker]
// The runtime has two workers, each on its own UCP context: `local` for peers
// on this host (shared memory, CMA) and `net` for peers on other hosts (host =
// Topology's host id and boot id, DISTX_HOSTID included). The net context
// sends every message up to 4 MiB eagerly (UCX_RNDV_THRESH) and uses no
// shared-memory transport. Measured on the throttled testbed (1 Gbit/s, one
// rank per host, 8 MiB all-reduce): with UCX 1.13's rendezvous over TCP the
// ring took 164 ms against gloo's 74 ms (link 41 % busy); every 256 KiB chunk
// waited for an RTS/RTR round trip queued behind the bulk data on the link.
// Eager: 76 ms (88 %). One global setting cannot serve both: eager over shared
// memory copies twice through the FIFO and made the intra-node stages of the
// hierarchical all-reduce 2-3x slower, while rendezvous there is a single CMA
// copy. A user's own UCX_RNDV_THRESH / UCX_TLS still apply to both contexts.
// Receives from any source are probed on both workers (UcxTransport::recv).
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
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Note [Network worker]: net = the worker for peers on other hosts.
  ucp_worker_h worker(bool net) const { return side(net).worker->get(); }
  const std::string& address(bool net) const { return side(net).address; }
  // Progresses both workers once; returns the number of events.
  unsigned progress();

  // The endpoint from our `net` or local worker to the worker at
  // `remoteAddress` (created once, shared).
  ucp_ep_h endpoint(bool net, const std::string& remoteAddress);

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
  struct Side {
    std::shared_ptr<Context> context;
    std::unique_ptr<Worker> worker;
    std::string address;
    std::map<std::string, ucp_ep_h> endpoints;  // guarded by mu_
  };
  Runtime();
  void progressLoop();
  const Side& side(bool net) const { return net ? net_ : local_; }
  Side& side(bool net) { return net ? net_ : local_; }
  // Flush-closes a side's endpoints; false if one could not finish.
  bool closeEndpoints(Side& s);

  Side local_, net_;
  int epollFd_ = -1;
  std::thread progressThread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> spinners_{0};

  std::mutex mu_;
  std::set<uint32_t> usedIds_;  // guarded by mu_
  uint32_t nextId_ = 0;         // guarded by mu_
  std::mutex createMu_;
};

}  // namespace distx::ucx
