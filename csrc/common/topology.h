// Which ranks of a process group share a host ("node"), for the hierarchical
// algorithms (Note [Topology] in topology.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace distx {

class Bootstrap;

// What one rank says about its host, exchanged at group creation.
struct HostInfo {
  uint64_t hostId = 0;      // DISTX_HOSTID (hashed) or hash(hostname + boot_id)
  uint64_t bootId = 0;      // hash of /proc/sys/kernel/random/boot_id (0 if unreadable)
  bool fromEnv = false;     // hostId came from DISTX_HOSTID
  int localWorldSize = -1;  // torchrun's LOCAL_WORLD_SIZE, -1 if unset
  int worldSize = -1;       // torchrun's WORLD_SIZE, -1 if unset
  std::string hostname;

  std::string serialize() const;
  static HostInfo parse(const std::string& s);  // InvalidArgument on garbage
};

// Node map of one group. Nodes are numbered in the order of their lowest
// rank; inside a node, ranks are in rank order (local rank 0 = the leader).
class Topology {
 public:
  Topology() = default;
  // Every rank on one node (the flat view).
  static Topology flat(int size);
  // Nodes of the given sizes, ranks assigned to them in order (tests).
  static Topology fromNodeSizes(const std::vector<int>& sizes);
  // Ranks with equal keys share a node.
  static Topology fromKeys(const std::vector<uint64_t>& keys);

  int size() const { return static_cast<int>(nodeOf_.size()); }
  int numNodes() const { return static_cast<int>(nodes_.size()); }
  int nodeOf(int rank) const { return nodeOf_[rank]; }
  int localRank(int rank) const { return localRank_[rank]; }
  int localSize(int rank) const { return static_cast<int>(nodes_[nodeOf_[rank]].size()); }
  const std::vector<int>& node(int i) const { return nodes_[i]; }
  const std::vector<std::vector<int>>& nodes() const { return nodes_; }
  // Every node holds the same number of ranks.
  bool uniform() const;
  // Ranks per node when uniform, else 0.
  int ranksPerNode() const { return uniform() && size() > 0 ? localSize(0) : 0; }
  int leader(int node) const { return nodes_[node][0]; }
  std::vector<int> leaders() const;
  // The ranks with local rank l, one per node, in node order (uniform only).
  std::vector<int> rail(int l) const;
  // One node, or one rank per node: hierarchy has nothing to win.
  bool isFlat() const { return numNodes() <= 1 || numNodes() == size(); }
  // Every node's ranks are consecutive (0..g-1 on node 0, ...).
  bool contiguous() const;
  // Ranks node by node (each node in rank order): the ring order that crosses
  // each host boundary once.
  std::vector<int> nodeOrder() const;
  // "2 nodes x 2 ranks [0,1] [2,3]" / "3 nodes, uneven (3+1+2) [...]".
  std::string describe() const;

 private:
  std::vector<int> nodeOf_, localRank_;
  std::vector<std::vector<int>> nodes_;
};

// This process's HostInfo. The host id is read once per process and kept: a
// DISTX_HOSTID that changes between groups is logged (once) and ignored, so
// every group of a process agrees on where it runs.
HostInfo localHostInfo();

// Builds the group's topology from every rank's HostInfo. Ranks that claim one
// host id but run on different kernels (different boot ids: a DISTX_HOSTID
// mistake) cannot share memory; they are split apart and a note says so.
// `notes` collects such findings for the log and diagnostics.
Topology topologyFromHosts(const std::vector<HostInfo>& hosts, std::vector<std::string>* notes);

// All-gathers HostInfo through the group's bootstrap (store) under `prefix`.
std::vector<HostInfo> exchangeHostInfo(Bootstrap& bootstrap, int rank, int size,
                                       const HostInfo& mine, const std::string& prefix = "topo/");

// 16 hex digits.
std::string hexId(uint64_t id);

// A 64-bit FNV-1a hash (stable across processes and builds).
uint64_t hash64(const std::string& s);

}  // namespace distx
