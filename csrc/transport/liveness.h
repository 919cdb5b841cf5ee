// Note [Liveness ring]
// Dead-peer detection that costs the data path nothing (UCX keeps shared
// memory; its PEER error mode would move everything to TCP, see DESIGN.md).
//
// Every rank keeps one TCP connection to each ring neighbour. The kernel closes
// a process's sockets when it dies, SIGKILL included, so a neighbour sees EOF
// or a reset within milliseconds. It reports the death locally and sends
// DEAD(rank) to its other neighbour, which forwards it on; the news reaches
// every rank in at most P/2 hops. A rank that leaves normally (shutdown) sends
// BYE first, so its exit is not taken for a death.
//
// Addresses (every IPv4 address of this host, and a port) are exchanged
// through the Bootstrap like the UCX worker addresses.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "transport/transport.h"

namespace distx {

class LivenessRing {
 public:
  using OnDeath = std::function<void(int deadRank, const std::string& how)>;

  LivenessRing(int rank, int size, Bootstrap& bootstrap, Deadline deadline, OnDeath onDeath);
  ~LivenessRing();
  LivenessRing(const LivenessRing&) = delete;
  LivenessRing& operator=(const LivenessRing&) = delete;

  // Announces an orderly exit (BYE) to both neighbours and stops watching.
  void leave();

 private:
  void loop();
  void report(int deadRank, const std::string& how, int fromFd);

  const int rank_;
  const int size_;
  OnDeath onDeath_;
  int listenFd_ = -1;
  int leftFd_ = -1;   // accepted from rank - 1
  int rightFd_ = -1;  // connected to rank + 1
  int wakeFds_[2] = {-1, -1};
  std::atomic<bool> reported_{false};
  std::thread thread_;
};

}  // namespace distx
