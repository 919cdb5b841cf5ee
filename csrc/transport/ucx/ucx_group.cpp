// Joining a group (Note [Shared UCX runtime], ucx_runtime.h): every member
// publishes its worker addresses, host identity and the tag group ids it has
// in use under "ucx_addr/<rank>", reads everyone else's, connects and takes
// the lowest id free on every member (Note [Tag layout]).
#include "transport/ucx/ucx_transport.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "common/error.h"
#include "common/tag.h"
#include "common/topology.h"

namespace distx::ucx {
namespace {

// The bootstrap value of "ucx_addr/<rank>" (Note [Shared UCX runtime]):
// [next id][n][n ids in use] as uint32, [host id][boot id] as uint64 (Note
// [Network worker]), [local address length] as uint32, then the local and the
// net worker's addresses.
struct Entry {
  uint32_t next = 0;
  std::vector<uint32_t> ids;
  uint64_t hostId = 0, bootId = 0;
  std::string local, net;
};

template <typename T>
void put(std::vector<uint8_t>& out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

std::vector<uint8_t> encodeEntry(const Entry& e) {
  std::vector<uint8_t> out;
  put(out, e.next);
  put(out, static_cast<uint32_t>(e.ids.size()));
  for (uint32_t id : e.ids)
    put(out, id);
  put(out, e.hostId);
  put(out, e.bootId);
  put(out, static_cast<uint32_t>(e.local.size()));
  out.insert(out.end(), e.local.begin(), e.local.end());
  out.insert(out.end(), e.net.begin(), e.net.end());
  return out;
}

Entry decodeEntry(const std::vector<uint8_t>& in, int rank) {
  size_t at = 0;
  auto get = [&](auto& v) {
    DISTX_CHECK(in.size() - at >= sizeof v, TransportError, "bad address entry of rank ", rank);
    std::memcpy(&v, in.data() + at, sizeof v);
    at += sizeof v;
  };
  Entry e;
  uint32_t n = 0, localLen = 0;
  get(e.next);
  get(n);
  DISTX_CHECK(n <= tag::kMaxGroups, TransportError, "bad address entry of rank ", rank);
  e.ids.resize(n);
  for (auto& id : e.ids)
    get(id);
  get(e.hostId);
  get(e.bootId);
  get(localLen);
  DISTX_CHECK(localLen > 0 && in.size() - at > localLen, TransportError,
              "bad address entry of rank ", rank);
  e.local.assign(reinterpret_cast<const char*>(in.data()) + at, localLen);
  e.net.assign(reinterpret_cast<const char*>(in.data()) + at + localLen, in.size() - at - localLen);
  return e;
}

}  // namespace

void UcxTransport::allocateGroupId(Bootstrap& bootstrap) {
  auto creating = runtime_->lockGroupCreation();
  const HostInfo me = localHostInfo();
  Entry mine;
  mine.next = runtime_->nextGroupId();
  mine.ids = runtime_->usedGroupIds();
  mine.hostId = me.hostId;
  mine.bootId = me.bootId;
  mine.local = runtime_->address(false);
  mine.net = runtime_->address(true);
  bootstrap.set("ucx_addr/" + std::to_string(rank_), encodeEntry(mine));
  std::set<uint32_t> used;
  uint32_t next = 0;
  endpoints_.assign(size_, nullptr);
  net_.assign(size_, false);
  for (int r = 0; r < size_; ++r) {
    const Entry e = decodeEntry(bootstrap.get("ucx_addr/" + std::to_string(r)), r);
    next = std::max(next, e.next);
    used.insert(e.ids.begin(), e.ids.end());
    // Note [Network worker]: another host (or another boot of it) goes through net.
    net_[r] = e.hostId != me.hostId || e.bootId != me.bootId;
    endpoints_[r] = runtime_->endpoint(net_[r], net_[r] ? e.net : e.local);
    if (net_[r]) anyNet_ = true;
  }
  // The first id free in every member, from the members' furthest cursor on:
  // ids go round before one is reused, so a late message of a dead group
  // cannot match a new group's receive.
  DISTX_CHECK(used.size() < tag::kMaxGroups, InvalidArgument, "more than ", tag::kMaxGroups,
              " distx process groups are alive in a member process; destroy some first");
  uint32_t id = next % tag::kMaxGroups;
  while (used.count(id))
    id = (id + 1) % tag::kMaxGroups;
  runtime_->reserveGroupId(id);
  groupId_ = id;
  idHeld_.store(true);
}

}  // namespace distx::ucx
