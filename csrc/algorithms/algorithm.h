// What every algorithm gets: a transport, the collective's identity (pg, seq)
// for tags and errors, a deadline, and a scratch buffer owned by the process
// group. Algorithms know nothing of torch; data is (pointer, count, dtype).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "common/tag.h"
#include "transport/transport.h"

namespace distx {

struct CollectiveContext {
  Transport& transport;
  uint32_t pg = 0;
  uint32_t seq = 0;
  Deadline deadline;
  size_t chunkBytes = 256 * 1024;
  std::vector<uint8_t>* scratch = nullptr;  // reused across calls; may be null
  tag::Kind kind = tag::Kind::kCollective;  // kControl for the backend's own checks

  int rank() const { return transport.rank(); }
  int size() const { return transport.size(); }

  RequestPtr send(int dst, uint64_t slot, const void* buf, size_t bytes) {
    return transport.send(dst, tag::make(kind, pg, seq, rank(), slot), buf, bytes);
  }
  RequestPtr recv(int src, uint64_t slot, void* buf, size_t bytes) {
    return transport.recv(src, tag::make(kind, pg, seq, src, slot), tag::kFullMask, buf, bytes);
  }
  void wait(Request& req, const char* what, int peer) {
    transport.wait(req, deadline, detail::concat(what, " rank ", peer));
  }
  // Scratch space of at least `bytes`, valid until the next call.
  uint8_t* scratchBytes(size_t bytes);
};

// True when a completed receive that expected `want` bytes got another size.
// Both transports report the received length (UcxTransport asks UCX for
// callback completion so recv_info is always filled), so this is exact.
inline bool receivedSizeMismatch(const Request& req, size_t want) {
  return req.receivedBytes() != want;
}

// Even split of `count` elements into `parts` segments (the first count % parts
// segments get one extra element).
struct Segments {
  size_t count;
  int parts;
  size_t size(int i) const {
    return count / parts + (static_cast<size_t>(i) < count % parts ? 1 : 0);
  }
  size_t offset(int i) const {
    const size_t base = count / parts, rem = count % parts;
    return base * i + std::min(static_cast<size_t>(i), rem);
  }
};

inline int mod(int a, int n) {
  return ((a % n) + n) % n;
}

// --- the algorithms (one file each) ---------------------------------------

// allreduce_ring.cpp: in place over data[count].
void allreduceRing(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op);

// allgather_ring.cpp: blocks[r] is rank r's block of blockBytes; this rank's
// own block must already hold its input.
void allgatherRing(CollectiveContext& ctx, const std::vector<void*>& blocks, size_t blockBytes);

// reduce_scatter_ring.cpp: data holds P blocks of blockCount elements; block
// r of rank r ends reduced (in place; other blocks hold partial results).
void reduceScatterRing(CollectiveContext& ctx, void* data, size_t blockCount, DType dt,
                       ReduceOp op);

// allreduce_recursive_doubling.cpp: in place over data[count]; latency-optimal
// (ceil(log2 P) rounds, +2 when P is not a power of two). Every rank ends with
// bit-identical results (operands are always combined lower rank first).
void allreduceRecursiveDoubling(CollectiveContext& ctx, void* data, size_t count, DType dt,
                                ReduceOp op);

// reduce_tree.cpp: binomial-tree reduction of data[count] into `root`'s data.
// On non-root ranks with children, data is overwritten with partial results.
void reduceTree(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op, int root);

// gather_linear.cpp: every rank's `bytes` at `in` land in out[rank] on `root`
// (out is used on the root only; out[root] may alias in).
void gatherLinear(CollectiveContext& ctx, const void* in, size_t bytes,
                  const std::vector<void*>& out, int root);

// scatter_linear.cpp: in[r] (root only) lands in rank r's `out`.
void scatterLinear(CollectiveContext& ctx, const std::vector<const void*>& in, void* out,
                   size_t bytes, int root);

// alltoall_pairwise.cpp: send[p] (sendBytes[p]) goes to rank p, which receives
// it into its recv[rank] (recvBytes[rank]). Sizes may differ per peer but must
// agree pairwise (checked: a mismatch is InvalidArgument, never a hang).
void alltoallPairwise(CollectiveContext& ctx, const std::vector<const void*>& send,
                      const std::vector<size_t>& sendBytes, const std::vector<void*>& recv,
                      const std::vector<size_t>& recvBytes);

// broadcast_tree.cpp: binomial tree from `root`, chunk-pipelined.
void broadcastTree(CollectiveContext& ctx, void* data, size_t bytes, int root);

// barrier_dissemination.cpp: ceil(log2 P) rounds of 1-byte messages.
void barrierDissemination(CollectiveContext& ctx);

}  // namespace distx
