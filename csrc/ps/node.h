// Node: one rank's part of the parameter server: a Client when the rank is a
// worker, a Shard + ServerLoop when it is a server (both when colocated), and
// the failure wiring between them.
//
// Note [PS liveness]
// The backend's liveness ring reports one death and then stops (a dead process
// group is dead). A parameter server must survive dead workers and keep
// watching, so each (server, worker) pair of ranks gets its own two-rank
// LivenessRing (TCP; the kernel closes it when either process dies, SIGKILL
// included, but not when one is merely stopped, so SIGSTOP blocks rather than
// drops). Pairs are connected in one global order, so set-up cannot deadlock.
// A dead worker is dropped from the clocks; a dead server aborts the
// transport with a message naming it, which every wait then raises.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ps/client.h"
#include "ps/server.h"
#include "transport/liveness.h"

namespace distx::ps {

struct NodeConfig {
  std::vector<int> workers;
  std::vector<int> servers;
  int staleness = 0;
  OptimizerConfig optimizer;
  size_t total = 0;
  size_t chunkElems = 1 << 18;       // 1 MiB of fp32
  Codec compression = Codec::kNone;  // of pushes (Note [PS compressed pushes])
  double topkRatio = 0.01;
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
};

class Node {
 public:
  // `init`: the initial flat parameters (config.total floats), identical on
  // every rank. `bootstrap` (may be null in tests) connects the liveness pairs.
  Node(Transport& transport, NodeConfig config, const float* init, Bootstrap* bootstrap);
  ~Node();

  const NodeConfig& config() const { return config_; }
  const Layout& layout() const { return layout_; }
  bool isWorker() const { return client_ != nullptr; }
  bool isServer() const { return server_ != nullptr; }
  Client& client();
  ServerLoop* server() { return server_.get(); }

  // A peer died (liveness or test fault injection).
  void peerDied(int rank, const std::string& how);
  // The first server death seen ("" if none).
  std::string failure() const;

  // Orderly end: the worker closes, then the local shard serves until every
  // worker has closed or died. Safe to call twice.
  void close();

 private:
  Transport& transport_;
  NodeConfig config_;
  Layout layout_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<ServerLoop> server_;
  std::vector<std::unique_ptr<LivenessRing>> pairs_;
  mutable std::mutex mu_;
  std::string failure_;
  bool closed_ = false;
};

}  // namespace distx::ps
