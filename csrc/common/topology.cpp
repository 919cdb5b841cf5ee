// Note [Topology]
// A node is a host: ranks on one node reach each other through shared memory,
// ranks on different nodes through the network. At group creation every rank
// publishes a HostInfo through the group's store (the PrefixStore torch scopes
// to the group, so each `new_group` sub-group gets its own map) and reads
// everyone else's; all ranks then build the same Topology from the same
// vector, so they always agree on it (a rank never decides from its own view).
//
// Host id = FNV-1a(hostname + boot_id) as NCCL does (boot_id changes with
// every boot and differs between machines; containers on one machine share
// it), or FNV-1a of DISTX_HOSTID when set (tests and odd clusters). The boot
// id also travels on its own, to catch a DISTX_HOSTID that puts ranks of two
// different kernels on one "host": they cannot share memory, so they are
// split into separate nodes and a note is logged (never a hang, never a
// wrong result: the transport is the same either way, only speed differs).
// A process's host id is read once and kept for its later groups.
//
// Nodes are numbered by their lowest rank; local rank 0 (the lowest rank of a
// node) is its leader. Hierarchy pays only with >= 2 nodes and >= 2 ranks on
// some node (isFlat() otherwise); the split-rail all-reduce also needs every
// node to hold the same number of ranks (uniform()).
#include "common/topology.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "common/bootstrap.h"
#include "common/error.h"
#include "common/logging.h"

namespace distx {

uint64_t hash64(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string hexId(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

std::string HostInfo::serialize() const {
  std::ostringstream os;
  os << "v1 " << std::hex << hostId << ' ' << bootId << std::dec << ' ' << (fromEnv ? 1 : 0) << ' '
     << localWorldSize << ' ' << worldSize << ' ' << hostname;
  return os.str();
}

HostInfo HostInfo::parse(const std::string& s) {
  std::istringstream is(s);
  std::string version;
  HostInfo h;
  int env = 0;
  is >> version >> std::hex >> h.hostId >> h.bootId >> std::dec >> env >> h.localWorldSize >>
      h.worldSize;
  DISTX_CHECK(version == "v1" && !is.fail(), InvalidArgument, "topology: unreadable host record '",
              s, "' (a rank of another distx version?)");
  h.fromEnv = env != 0;
  std::getline(is >> std::ws, h.hostname);
  return h;
}

namespace {

std::string readFirstLine(const char* path) {
  std::ifstream f(path);
  std::string line;
  if (f) std::getline(f, line);
  return line;
}

int envInt(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return end && *end == '\0' && n > 0 ? static_cast<int>(n) : -1;
}

}  // namespace

HostInfo localHostInfo() {
  static std::mutex mu;
  static bool pinned = false;
  static HostInfo first;
  static bool warned = false;

  HostInfo h;
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) name[0] = '\0';
  h.hostname = name;
  const std::string boot = readFirstLine("/proc/sys/kernel/random/boot_id");
  h.bootId = boot.empty() ? 0 : hash64(boot);
  const char* forced = std::getenv("DISTX_HOSTID");
  h.fromEnv = forced && *forced;
  h.hostId =
      h.fromEnv ? hash64(std::string("DISTX_HOSTID=") + forced) : hash64(h.hostname + "\n" + boot);
  h.localWorldSize = envInt("LOCAL_WORLD_SIZE");
  h.worldSize = envInt("WORLD_SIZE");

  std::lock_guard<std::mutex> lock(mu);
  if (!pinned) {
    pinned = true;
    first = h;
    return h;
  }
  if (h.hostId != first.hostId && !warned) {
    warned = true;
    DISTX_LOG(LogLevel::kWarn, "[distx topology]",
              "the host id changed since this process's first group (DISTX_HOSTID now ",
              forced ? forced : "unset",
              "); keeping the first one so every group of the "
              "process agrees on its host");
  }
  h.hostId = first.hostId;
  h.fromEnv = first.fromEnv;
  return h;
}

Topology Topology::fromKeys(const std::vector<uint64_t>& keys) {
  Topology t;
  std::map<uint64_t, int> index;
  t.nodeOf_.resize(keys.size());
  t.localRank_.resize(keys.size());
  for (size_t r = 0; r < keys.size(); ++r) {
    auto it = index.find(keys[r]);
    if (it == index.end()) {
      it = index.emplace(keys[r], static_cast<int>(t.nodes_.size())).first;
      t.nodes_.emplace_back();
    }
    auto& members = t.nodes_[it->second];
    t.nodeOf_[r] = it->second;
    t.localRank_[r] = static_cast<int>(members.size());
    members.push_back(static_cast<int>(r));
  }
  return t;
}

Topology Topology::flat(int size) {
  return fromKeys(std::vector<uint64_t>(size, 0));
}

Topology Topology::fromNodeSizes(const std::vector<int>& sizes) {
  std::vector<uint64_t> keys;
  for (size_t i = 0; i < sizes.size(); ++i)
    keys.insert(keys.end(), sizes[i], i);
  return fromKeys(keys);
}

bool Topology::uniform() const {
  for (const auto& n : nodes_) {
    if (n.size() != nodes_[0].size()) return false;
  }
  return true;
}

std::vector<int> Topology::leaders() const {
  std::vector<int> out;
  for (const auto& n : nodes_)
    out.push_back(n[0]);
  return out;
}

std::vector<int> Topology::rail(int l) const {
  std::vector<int> out;
  for (const auto& n : nodes_) {
    DISTX_CHECK(l >= 0 && l < static_cast<int>(n.size()), InvalidArgument, "topology: no rail ", l,
                " on a node of ", n.size(), " ranks");
    out.push_back(n[l]);
  }
  return out;
}

bool Topology::contiguous() const {
  int next = 0;
  for (const auto& n : nodes_) {
    for (int r : n) {
      if (r != next++) return false;
    }
  }
  return true;
}

std::vector<int> Topology::nodeOrder() const {
  std::vector<int> out;
  for (const auto& n : nodes_)
    out.insert(out.end(), n.begin(), n.end());
  return out;
}

std::string Topology::describe() const {
  std::ostringstream os;
  os << numNodes() << (numNodes() == 1 ? " node" : " nodes");
  if (uniform()) {
    os << " x " << ranksPerNode() << (ranksPerNode() == 1 ? " rank" : " ranks");
  } else {
    os << ", uneven (";
    for (int i = 0; i < numNodes(); ++i)
      os << (i ? "+" : "") << nodes_[i].size();
    os << ")";
  }
  for (const auto& n : nodes_) {
    os << " [";
    for (size_t i = 0; i < n.size(); ++i)
      os << (i ? "," : "") << n[i];
    os << "]";
  }
  return os.str();
}

Topology topologyFromHosts(const std::vector<HostInfo>& hosts, std::vector<std::string>* notes) {
  // A host id shared by ranks with different boot ids: split by boot id.
  std::map<uint64_t, std::map<uint64_t, int>> boots;  // hostId -> bootId -> first rank
  for (size_t r = 0; r < hosts.size(); ++r)
    boots[hosts[r].hostId].emplace(hosts[r].bootId, static_cast<int>(r));
  std::vector<uint64_t> keys(hosts.size());
  for (size_t r = 0; r < hosts.size(); ++r) {
    const auto& b = boots[hosts[r].hostId];
    keys[r] = b.size() == 1
                  ? hosts[r].hostId
                  : hash64(std::to_string(hosts[r].hostId) + "/" + std::to_string(hosts[r].bootId));
  }
  for (const auto& [hostId, byBoot] : boots) {
    if (byBoot.size() < 2 || !notes) continue;
    std::ostringstream os;
    os << "ranks";
    for (const auto& [boot, rank] : byBoot)
      os << " " << rank << " (" << hosts[rank].hostname << ")";
    os << " claim one host id " << hexId(hostId)
       << (hosts[byBoot.begin()->second].fromEnv ? " (DISTX_HOSTID)" : "")
       << " but run on different machines (boot ids differ); treating them as separate hosts";
    notes->push_back(os.str());
  }
  Topology t = Topology::fromKeys(keys);
  if (notes && t.numNodes() > 1 && !t.uniform()) {
    notes->push_back("hosts hold unequal numbers of ranks (" + t.describe() +
                     "): all-reduce uses reduce -> leaders -> broadcast, not split-rail");
  }
  return t;
}

std::vector<HostInfo> exchangeHostInfo(Bootstrap& bootstrap, int rank, int size,
                                       const HostInfo& mine, const std::string& prefix) {
  const std::string s = mine.serialize();
  bootstrap.set(prefix + std::to_string(rank), std::vector<uint8_t>(s.begin(), s.end()));
  std::vector<HostInfo> all(size);
  for (int r = 0; r < size; ++r) {
    if (r == rank) {
      all[r] = mine;
      continue;
    }
    const auto v = bootstrap.get(prefix + std::to_string(r));
    all[r] = HostInfo::parse(std::string(v.begin(), v.end()));
  }
  return all;
}

}  // namespace distx
