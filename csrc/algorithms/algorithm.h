// What every algorithm gets: a transport, the collective's identity (pg, seq)
// for tags and errors, a deadline, and a scratch buffer owned by the process
// group. Algorithms know nothing of torch; data is (pointer, count, dtype).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "common/tag.h"
#include "common/topology.h"
#include "transport/transport.h"

namespace distx {

class SharedStaging;  // shared_staging.h

// Note [Narrowed context]
// narrow(members, phase) gives a context over a subset of this one's ranks (a
// node, a rail, the node leaders): rank() and size() become the position in
// and the length of `members`, so every flat algorithm runs unchanged on the
// subset. Messages still go to group ranks over the same transport; the tag's
// src field stays the group rank and the phase field (Note [Tag layout])
// keeps each stage's messages apart from the other stages' of the same
// collective. A narrowed context has its own scratch (one buffer per phase,
// from stageScratch) so a stage never overwrites data its caller keeps there.
// Rule for hierarchical algorithms: within one collective, two stages that can
// exchange messages between the same pair of ranks use different phases.
// Note [Chunk size]
// The ring-style algorithms pipeline in chunks of chunkBytes, one message
// each: small chunks overlap transfer and reduction finely but pay one
// rendezvous handshake per chunk, which the peer only answers when it next
// progresses (often after its own reduction of the previous chunk). Between
// ranks of one host (shared memory, a CMA copy per message) the handshakes
// cost more than the overlap buys below a few MiB: 2 ranks on the 2-core VM,
// barrier-separated, 32 MiB took 13.3 ms with 256 KiB chunks and 9.2 ms with
// 2 MiB; 64 MiB 28 -> 23 ms; 4 ranks, 64 MiB 73 -> 63 ms; 1, 4 or 16 MiB
// chunks were no better than 2 MiB (benchmarks/allreduce.py). Across hosts a
// chunk is what the TCP stream pipelines (sent eager, Note [Network worker]),
// and 256 KiB keeps the link busy while the previous chunk is reduced.
// So unless DISTX_CHUNK_BYTES sets one size for every context, a context
// whose ranks share one host uses kLocalChunkBytes and one that spans hosts
// kNetChunkBytes; narrow() applies the rule to each stage, so the intra-node
// stages of a hierarchical collective get the local chunk. Every rank holds
// the same topology, so every rank cuts the same chunks.
constexpr size_t kLocalChunkBytes = 2 * 1024 * 1024;
constexpr size_t kNetChunkBytes = 256 * 1024;
// Note [Pipelined split-rail]: the piece of every segment that moves through
// the split-rail's stages at a time. DISTX_PIECE_BYTES sets one size (0 = no
// pipelining); by default (kRailPieceAuto) railPieceFor picks it per call.
constexpr size_t kRailPieceAuto = SIZE_MAX;
constexpr size_t kRailPieceMinBytes = 256 * 1024, kRailPieceMaxBytes = 4 * 1024 * 1024;
// The automatic piece for segments of segmentBytes: an eighth of the
// segment, clamped to [kRailPieceMinBytes, kRailPieceMaxBytes].
inline size_t railPieceFor(size_t segmentBytes) {
  return std::clamp(segmentBytes / 8, kRailPieceMinBytes, kRailPieceMaxBytes);
}

struct CollectiveContext {
  Transport& transport;
  uint32_t pg = 0;
  uint32_t seq = 0;
  Deadline deadline;
  size_t chunkBytes = kNetChunkBytes;
  // The chunk narrow() gives a subset on one host (Note [Chunk size]); 0 keeps
  // chunkBytes for every subset.
  size_t localChunkBytes = 0;
  std::vector<uint8_t>* scratch = nullptr;  // reused across calls; may be null
  tag::Kind kind = tag::Kind::kCollective;  // kControl for the backend's own checks
  // The group's node map (Note [Topology]); null = unknown (flat algorithms
  // ignore it; the hierarchical ones treat null as one node).
  const Topology* topology = nullptr;
  // One scratch buffer per phase for narrowed contexts (tag::kMaxPhases
  // entries); may be null (stages then allocate their own).
  std::vector<std::vector<uint8_t>>* stageScratch = nullptr;
  // Note [Pipelined split-rail]: bytes per piece of each segment; 0 = the
  // stages run one after the other; kRailPieceAuto = railPieceFor. Must
  // agree on every rank.
  size_t railPieceBytes = kRailPieceAuto;
  // The group's DISTX_ALGO / pg_options.algo (Note [Settings table]), read
  // once when the group was made; "" = choose by size and topology.
  std::string forcedAlgorithm;
  // The group's shared-memory staging (Note [Shared staging]); may be null.
  // Only the whole group's context has it: narrow() clears it.
  SharedStaging* staging = nullptr;

  // Narrowing (empty members = every rank of the transport, phase 0).
  uint32_t phase = 0;
  std::vector<int> members;  // group ranks of this context, in its rank order
  int subRank = -1;          // this rank's index in members

  int rank() const { return members.empty() ? transport.rank() : subRank; }
  int size() const { return members.empty() ? transport.size() : static_cast<int>(members.size()); }
  // The group (transport) rank of this context's rank r.
  int groupRank(int r) const { return members.empty() ? r : members[r]; }

  // A context over `ranks` (ranks of this context, in the order the stage
  // should see them; must include this rank), tagged with `phase` (1..7, not
  // this context's own). InvalidArgument otherwise.
  CollectiveContext narrow(const std::vector<int>& ranks, uint32_t phase) const;

  RequestPtr send(int dst, uint64_t slot, const void* buf, size_t bytes) {
    return transport.send(groupRank(dst), tag::make(kind, pg, seq, phase, transport.rank(), slot),
                          buf, bytes);
  }
  RequestPtr recv(int src, uint64_t slot, void* buf, size_t bytes) {
    const int from = groupRank(src);
    return transport.recv(from, tag::make(kind, pg, seq, phase, from, slot), tag::kFullMask, buf,
                          bytes);
  }
  void wait(Request& req, const char* what, int peer) {
    transport.wait(req, deadline, detail::concat(what, " rank ", groupRank(peer)));
  }
  // Scratch space of at least `bytes`, valid until the next call.
  uint8_t* scratchBytes(size_t bytes);
};

// Throws InvalidArgument when a collective needs more than tag::kMaxSlots
// message slots (a huge tensor cut into small chunks would otherwise wrap the
// slot field and mix its messages). Algorithms call it before the first send.
void checkSlots(const CollectiveContext& ctx, uint64_t slots);

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

// allreduce_shm.cpp: in place, through ctx.staging when the whole group is on
// one host (Note [Shared staging]); the ring otherwise.
void allreduceShm(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op);

// shm_segment_stages.cpp: the hierarchical all-reduce's intra-node stages
// through shared staging, over `node` (the node's ranks, a ready staging):
// local rank l ends with Segments{count, g} segment l reduced (op: no AVG
// division), then with every segment. [lo, hi) limits both to those elements
// of every segment (clipped to its size).
void shmSegmentReduceScatter(CollectiveContext& node, SharedStaging& st, void* data, size_t count,
                             DType dt, ReduceOp op, size_t lo = 0, size_t hi = SIZE_MAX);
void shmSegmentAllgather(CollectiveContext& node, SharedStaging& st, void* data, size_t count,
                         DType dt, size_t lo = 0, size_t hi = SIZE_MAX);

// allgather_ring.cpp: blocks[r] is rank r's block of blockBytes; this rank's
// own block must already hold its input.
void allgatherRing(CollectiveContext& ctx, const std::vector<void*>& blocks, size_t blockBytes);
// The same with per-block sizes (every rank passes the same sizes).
void allgatherRingBlocks(CollectiveContext& ctx, const std::vector<void*>& blocks,
                         const std::vector<size_t>& bytes);

// reduce_scatter_ring.cpp: data holds P blocks of blockCount elements; block
// r of rank r ends reduced (in place; other blocks hold partial results).
void reduceScatterRing(CollectiveContext& ctx, void* data, size_t blockCount, DType dt,
                       ReduceOp op);
// The same over P blocks anywhere, block i of counts[i] elements.
void reduceScatterRingBlocks(CollectiveContext& ctx, const std::vector<void*>& blocks,
                             const std::vector<size_t>& counts, DType dt, ReduceOp op);

// ring_node_ordered.cpp: allgatherRing / reduceScatterRing with the ring
// walking ranks node by node (ctx.topology); the flat ring when the ranks are
// node-contiguous already or the topology is unknown.
void allgatherRingNodeOrdered(CollectiveContext& ctx, const std::vector<void*>& blocks,
                              size_t blockBytes);
void reduceScatterRingNodeOrdered(CollectiveContext& ctx, void* data, size_t blockCount, DType dt,
                                  ReduceOp op);

// --- hierarchical (ctx.topology; Note [Hierarchical all-reduce]) ------------

// The inter-node stage of a hierarchical all-reduce: all-reduce `count`
// elements at `data` in place over the ranks of `rail` (a narrowed context:
// one rank per node). Called with op SUM (AVG is finished by the caller) or
// MIN/MAX/PRODUCT/bitwise ops; must leave every rank of the rail with
// bit-identical results, and must accept count == 0.
using RailAllreduceFn =
    std::function<void(CollectiveContext& rail, void* data, size_t count, DType dt, ReduceOp op)>;

// A 16-bit cast for the pipelined split-rail's rail stage (Note [Pipelined
// split-rail], "With a cast"): float32 data, 2 bytes per element on the
// wire, float32 sums. `account` receives what one all-reduce did: this
// rank's shard (elements), its rail's size and its place on it, bytes sent on
// the rail, time in the codec, pieces redone densely.
struct RailCast {
  std::function<void(const float* src, uint16_t* dst, size_t n, float scale)> encode;
  std::function<void(const uint16_t* src, float* dst, size_t n)> decode;
  std::function<size_t(const uint16_t* src, size_t n)> countNonFinite;
  std::function<void(size_t shard, int railSize, int railRank, uint64_t wireBytes,
                     uint64_t codecNanos, uint64_t denseRedos)>
      account;
};

// The default inter-node stage: the flat size rules (select.cpp) on the rail.
void defaultRailAllreduce(CollectiveContext& rail, void* data, size_t count, DType dt, ReduceOp op);

// ctx's topology (Topology::flat when null); InvalidArgument if its size is not ctx's.
Topology contextTopology(const CollectiveContext& ctx);

// allreduce_hierarchical.cpp: split-rail (intra reduce-scatter, one rail
// all-reduce per local rank, intra all-gather); hosts with unequal rank counts
// go to allreduceLeaders. `rail` empty = defaultRailAllreduce. `cast`: where
// the split-rail runs pipelined, its rail sends 16-bit casts instead of
// calling `rail` (the compression switch, Note [Pipelined split-rail]).
void allreduceHierarchical(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op,
                           const RailAllreduceFn& rail = {}, const RailCast* cast = nullptr);

// allreduce_split_rail_pipelined.cpp (Note [Pipelined split-rail]): the
// split-rail with the default rail over pieces of `pieceElems` elements of
// every segment, the rail of one piece on the wire while the node works on
// the next. `shmNode` and `st`: the node's context over a ready staging
// (both stages then run here, sliced into the pieces), or both null (the
// caller has reduce-scattered the node's segments and all-gathers them after);
// `rail`: this rank's rail (narrowed); g, l: ranks per node, this rank's local
// rank. Ends with this rank's segment reduced over the group (AVG divided).
// Every rank of the group must call it with the same count and pieceElems.
// `cast` (float32 SUM/AVG only): the rail sends 16-bit values instead.
void allreduceSplitRailPipelined(CollectiveContext* shmNode, SharedStaging* st,
                                 CollectiveContext& rail, int g, int l, void* data, size_t count,
                                 DType dt, ReduceOp op, size_t pieceElems,
                                 const RailCast* cast = nullptr);

// allreduce_leaders.cpp: intra reduce to the node leader, all-reduce among the
// leaders (`inter`, empty = defaultRailAllreduce), intra broadcast.
void allreduceLeaders(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op,
                      const RailAllreduceFn& inter = {});

// broadcast_hierarchical.cpp: inter-node tree over one head per node (the
// root on its node), then intra-node trees; one copy per node crosses the link.
void broadcastHierarchical(CollectiveContext& ctx, void* data, size_t bytes, int root);

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

// allreduce_rail_direct.cpp: pairwise scatter: segment p of `src` (seg,
// elements of `elem` bytes) goes to rank p, which receives it into slot q
// (maxSeg elements) of its `dst` for each sender q; this rank's own segment
// is not copied. One message per peer, slot kScatterSegmentsSlot (above every
// slot of a ring all-gather that follows on the same context). Returns once
// every receive is in; the sends too unless `inFlight` takes them (entry p
// for peer p: the caller waits for them before src changes).
constexpr uint64_t kScatterSegmentsSlot = tag::kMaxSlots - 1;
void scatterSegments(CollectiveContext& ctx, const void* src, void* dst, const Segments& seg,
                     size_t maxSeg, size_t elem, std::vector<RequestPtr>* inFlight = nullptr);

// The device-neutral hierarchical all-reduce, its rail stages and the
// kernels they run on: hierarchical_device.h (Note [Device kernels]).

// broadcast_tree.cpp: binomial tree from `root`, chunk-pipelined.
void broadcastTree(CollectiveContext& ctx, void* data, size_t bytes, int root);

// barrier_dissemination.cpp: ceil(log2 P) rounds of 1-byte messages.
void barrierDissemination(CollectiveContext& ctx);

}  // namespace distx
