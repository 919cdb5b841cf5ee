// Note [Liveness ring]
// Dead-peer detection that costs the data path nothing (UCX keeps shared
// memory; its PEER error mode would move everything to TCP, see docs/design.md).
//
// Every rank keeps one TCP connection to each ring neighbour. The kernel closes
// a process's sockets when it dies, SIGKILL included, so a neighbour sees EOF
// or a reset within milliseconds. It reports the death locally and sends
// DEAD(rank) to its other neighbour, which forwards it on; the news reaches
// every rank in at most P/2 hops. A rank that leaves normally (shutdown) sends
// BYE first, so its exit is not taken for a death.
//
// Addresses (every IPv4 address of this host, and a port) are exchanged
// through the Bootstrap like the UCX worker addresses. Setting up is bounded
// by the deadline at every step (a stray or silent connection to the listener
// cannot stall it), and a failed setup closes every descriptor it opened.
//
// One process-wide watcher thread (LivenessHub) polls the sockets of every
// group's ring, so a group costs two sockets and no thread (Note [Shared UCX
// runtime] has the numbers). Reads are non-blocking: a descriptor number the
// watcher saw ready may have been closed and reused meanwhile.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "transport/transport.h"

namespace distx {

class LivenessHub;

class LivenessRing {
 public:
  using OnDeath = std::function<void(int deadRank, const std::string& how)>;

  LivenessRing(int rank, int size, Bootstrap& bootstrap, Deadline deadline, OnDeath onDeath);
  ~LivenessRing();
  LivenessRing(const LivenessRing&) = delete;
  LivenessRing& operator=(const LivenessRing&) = delete;

  // Announces an orderly exit (BYE) to both neighbours and stops watching.
  void leave();

  // Threads of the process-wide watcher (tests check it is shared).
  static int watcherThreads();

 private:
  friend class LivenessHub;
  // Called by the watcher (its lock held) when `fd` is readable. False: stop
  // watching that side.
  bool onReadable(int fd);
  void report(int deadRank, const std::string& how, int fromFd);

  const int rank_;
  const int size_;
  OnDeath onDeath_;
  int leftFd_ = -1;                            // accepted from rank - 1
  int rightFd_ = -1;                           // connected to rank + 1
  bool leftOpen_ = false, rightOpen_ = false;  // watched sides; guarded by the hub's lock
  std::atomic<bool> reported_{false};
  std::shared_ptr<LivenessHub> hub_;  // set while watched
};

}  // namespace distx
