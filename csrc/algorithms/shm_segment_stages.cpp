// The intra-node stages of the hierarchical all-reduce through shared staging
// (Note [Shared staging]; Note [Hierarchical all-reduce] step 1 and 3).
//
// The vector is cut into g Segments (segment l is local rank l's, as the ring
// stages cut it), each segment into pieces of S elements (S = the staging's
// slot). Block k is the k-th piece of every segment, so sub-chunk j of block
// k lies in segment j. Two passes, each a run of blocks on the staging's
// counters (blocks are counted over the group's life, so the slot of block
// b is b % 2):
//   reduce-scatter: stage (copy the pieces of the other segments into this
//     rank's in-slots), then reduce the peers' copies of this rank's piece
//     into the vector in place; publishes copied, then reduced and consumed;
//   all-gather: copy this rank's piece into its out-slot (published as
//     reduced), then copy every peer's out-slot into the vector (consumed).
// Both passes can be limited to the elements [lo, hi) of every segment, so a
// pipelined caller runs them piece by piece (Note [Pipelined split-rail]).
// The slot rules are those of allreduce_shm.cpp: staging block b waits
// until every peer has reduced b-2, writing an out-slot until every peer has
// consumed b-2. A pass publishes every counter for each of its blocks, so the
// rules hold across passes and calls whatever pass used a slot before.
// Own values first, then the peers' in rank order: each piece is reduced by
// one rank, so the node's ranks agree bit for bit.
#include <algorithm>
#include <cstring>

#include "algorithms/algorithm.h"
#include "algorithms/shared_staging.h"
#include "common/reduce.h"

namespace distx {
namespace {

// The elements [lo, hi) of every segment (clipped to its size), cut into
// pieces; every rank computes the same blocks (they depend on the largest
// segment, seg.size(0)).
struct Pieces {
  Segments seg;
  size_t piece;    // elements per piece
  size_t lo, hi;   // the range within each segment
  uint64_t count;  // blocks
  Pieces(size_t total, int g, size_t pieceElems, size_t from, size_t to)
      : seg{total, g},
        piece(pieceElems),
        lo(from),
        hi(std::min(to, seg.size(0))),
        count(hi > lo ? (hi - lo + pieceElems - 1) / pieceElems : 0) {}
  size_t end(int j) const { return std::min(seg.size(j), hi); }
  size_t start(uint64_t k, int j) const {
    return std::min(end(j), lo + static_cast<size_t>(k) * piece);
  }
  // Piece k of segment j: its first element and length (0 past the end).
  size_t first(uint64_t k, int j) const { return seg.offset(j) + start(k, j); }
  size_t length(uint64_t k, int j) const { return std::min(piece, end(j) - start(k, j)); }
};

Pieces piecesFor(const SharedStaging& st, size_t count, int g, DType dt, size_t lo, size_t hi) {
  return Pieces(count, g, std::max<size_t>(1, st.slotBytes() / dtypeSize(dt)), lo, hi);
}

}  // namespace

void shmSegmentReduceScatter(CollectiveContext& node, SharedStaging& st, void* data, size_t count,
                             DType dt, ReduceOp op, size_t lo, size_t hi) {
  const int g = node.size(), r = node.rank();
  const size_t elem = dtypeSize(dt);
  const Pieces p = piecesFor(st, count, g, dt, lo, hi);
  auto* bytes = static_cast<uint8_t*>(data);
  const uint64_t base = st.blocks();
  for (uint64_t k = 0; k < p.count; ++k) {
    const uint64_t b = base + k;
    if (b >= 2) st.waitPeers(node, SharedStaging::kReduced, b - 1);
    for (int j = 0; j < g; ++j) {
      if (j != r && p.length(k, j))
        std::memcpy(st.in(r, b, j), bytes + p.first(k, j) * elem, p.length(k, j) * elem);
    }
    st.publish(SharedStaging::kCopied, b + 1);
    st.waitPeers(node, SharedStaging::kCopied, b + 1);
    if (const size_t n = p.length(k, r)) {
      uint8_t* mine = bytes + p.first(k, r) * elem;
      for (int j = 0; j < g; ++j) {
        if (j != r) reduceInto(mine, st.in(j, b, r), n, dt, op);
      }
    }
    st.publish(SharedStaging::kReduced, b + 1);
    st.publish(SharedStaging::kConsumed, b + 1);
  }
  st.advance(p.count);
}

void shmSegmentAllgather(CollectiveContext& node, SharedStaging& st, void* data, size_t count,
                         DType dt, size_t lo, size_t hi) {
  const int g = node.size(), r = node.rank();
  const size_t elem = dtypeSize(dt);
  const Pieces p = piecesFor(st, count, g, dt, lo, hi);
  auto* bytes = static_cast<uint8_t*>(data);
  const uint64_t base = st.blocks();
  for (uint64_t k = 0; k < p.count; ++k) {
    const uint64_t b = base + k;
    if (b >= 2) st.waitPeers(node, SharedStaging::kConsumed, b - 1);
    if (const size_t n = p.length(k, r))
      std::memcpy(st.out(r, b), bytes + p.first(k, r) * elem, n * elem);
    st.publish(SharedStaging::kCopied, b + 1);
    st.publish(SharedStaging::kReduced, b + 1);
    st.waitPeers(node, SharedStaging::kReduced, b + 1);
    for (int j = 0; j < g; ++j) {
      if (j != r && p.length(k, j))
        std::memcpy(bytes + p.first(k, j) * elem, st.out(j, b), p.length(k, j) * elem);
    }
    st.publish(SharedStaging::kConsumed, b + 1);
  }
  st.advance(p.count);
}

}  // namespace distx
