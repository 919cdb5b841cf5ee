// Note [PS sharding]
// The worker's parameters are flattened into one fp32 vector of N elements
// (in the order the Python side lists them) and cut into keys (chunks) of at
// most `chunkElems` elements: key i covers [i*chunkElems, min(N, (i+1)*chunkElems)).
// Key i lives on server servers[i mod S]. Every rank computes the same layout
// from (N, chunkElems, servers), so placement needs no agreement beyond them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/error.h"

namespace distx::ps {

struct Layout {
  Layout(size_t total, size_t chunkElems, std::vector<int> servers)
      : total_(total), chunkElems_(chunkElems), servers_(std::move(servers)) {
    DISTX_CHECK(chunkElems_ > 0, InvalidArgument, "ps: chunk of 0 elements");
    DISTX_CHECK(!servers_.empty(), InvalidArgument, "ps: no server ranks");
    DISTX_CHECK(total_ / chunkElems_ < (1ull << 31), InvalidArgument, "ps: too many chunks");
  }
  size_t total() const { return total_; }
  size_t chunkElems() const { return chunkElems_; }
  uint32_t keys() const { return static_cast<uint32_t>((total_ + chunkElems_ - 1) / chunkElems_); }
  size_t offset(uint32_t key) const { return key * chunkElems_; }
  size_t count(uint32_t key) const {
    const size_t o = offset(key);
    return o + chunkElems_ <= total_ ? chunkElems_ : total_ - o;
  }
  int serverOf(uint32_t key) const { return servers_[key % servers_.size()]; }
  const std::vector<int>& servers() const { return servers_; }
  // The keys that server rank `rank` holds (empty if it is no server).
  std::vector<uint32_t> keysOf(int rank) const {
    std::vector<uint32_t> out;
    for (uint32_t k = 0; k < keys(); ++k)
      if (serverOf(k) == rank) out.push_back(k);
    return out;
  }

 private:
  size_t total_;
  size_t chunkElems_;
  std::vector<int> servers_;
};

}  // namespace distx::ps
