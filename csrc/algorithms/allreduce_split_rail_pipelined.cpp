// Note [Pipelined split-rail]
// The split-rail all-reduce (Note [Hierarchical all-reduce]) runs its three
// stages one after the other: while a node reduce-scatters or all-gathers
// through shared memory its link is idle, and while the rail stage is on the
// wire the node's memory work waits. Here the stages go piece by piece, in
// one thread: piece k is the elements [k·S, (k+1)·S) of every one of the g
// segments (S = pieceElems, from ctx.railPieceBytes; see "Piece size"
// below), so piece k of this
// rank's segment is exactly what the intra-node reduce-scatter of piece k
// hands it. Iteration k:
//   1. intra-node reduce-scatter of piece k (shared staging, sliced to the
//      piece's range: shm_segment_stages.cpp);
//   2. post piece k's rail reduce-scatter (direct: sub-chunk j of the piece,
//      Segments{len, n}, goes to rail rank j; receives for this rank's own
//      sub-chunk are posted first);
//   3. piece k-1: wait for its sub-chunks, reduce them into this rank's own
//      sub-chunk (own value first, then the rail peers in rank order), divide
//      once by P for AVG, and post its rail all-gather (direct: the reduced
//      sub-chunk to every rail peer; their sub-chunks land in place);
//   4. piece k-2: wait for its all-gather, then the intra-node all-gather of
//      piece k-2.
// The sends of step 2 and 3 go out through the transport (UCX's progress
// thread moves them, Note [UCX progress]) while this thread copies and
// reduces the next pieces in shared memory: a piece's transfer overlaps the
// intra-node work of its neighbours, and the link always has the next piece
// queued. No thread is added (a second thread for the rail stage, tried on
// the 2-core VM, lost to the cores it took from the ranks).
//
// Invariants: each element is reduced by exactly one rank per stage and then
// copied, so every rank ends bit-identical. Every wait in iteration k is for
// messages or counters that ranks post in iterations <= k in the same order,
// so no cycle: every rank of the group runs the same iterations (the choice
// depends only on count, g, n and pieceElems, equal everywhere). Rail
// messages use slots 2k and 2k+1 of the rail's phase; an all-gather receive
// overwrites sub-chunks the reduce-scatter sent, so piece k's reduce-scatter
// sends complete before its all-gather receives are posted.
//
// Departure from the blueprint (docs/design.md, "the flat ring, recursive doubling and tree
// algorithms run unchanged as stages of a hierarchical one"): here the rail
// stage is its own direct exchange, and the intra-node stages are sliced,
// because a flat algorithm runs a whole vector to completion in one call and
// so cannot leave a piece on the wire while the thread works on another.
//
// Bytes are those of the sequential split-rail with a ring rail: intra
// 2(g-1)/g·N and inter 2(n-1)/n·N/g per rank. The direct rail has 2 latency
// steps per piece instead of the ring's 2(n-1), and n-1 messages per step.
//
// With a cast (the compression switch with fp16/bf16, RailCast): each piece
// of this rank's segment is encoded once; the reduce-scatter sends 16-bit
// sub-chunks, the reducing rank decodes every rail rank's copy (its own
// included) and sums them in float32 in rail rank order, scales once (AVG)
// and encodes the sum once; the all-gather sends that, and every rank decodes
// the gathered piece into the vector. So each value is rounded to 16 bits
// twice, as in allreduce_compressed_cast.cpp. The piece's float32 values stay
// untouched until that decode: where the gathered payload holds a NaN/inf
// code (every rail rank sees the same payload), the rail redoes that piece
// densely (a ring on the rail, phase 5) instead of decoding.
//
// Piece size (railPieceFor in algorithm.h, DISTX_PIECE_BYTES overrides): an
// eighth of the segment, 256 KiB to 4 MiB, from two pieces per segment on.
// Small pieces shorten the pipeline's fill and drain; each piece costs a few
// wake-ups (staging and transport waits), which on the 2-core VM with 4-8
// ranks cost up to ~1 ms each. Measured on the throttled testbed
// (benchmarks/allreduce_multihost.py, hierarchical@B): at 1 Gbit/s 256 KiB
// pieces were best (2x4, 8 MiB: 75 ms against 83 ms with 512 KiB and 81 ms
// sequential), at 10 Gbit/s they were the worst (2x2, 32 MiB: 102-117 ms,
// against 75 ms with 1 MiB and 62-78 ms with 4 MiB). The rule keeps 256 KiB
// where segments are small and grows with them. With it, at 1 Gbit/s and
// >= 8 MiB, the split-rail went from 1.36-1.52x the flat ring to 1.43-1.59x
// at 2x2 and from 1.54-1.76x to 1.71-1.84x at 2x4, the link from 75-89 % to
// 83-94 % busy (same run, d0c1aef; README "Multi-host").
//
// Where a node could not map the staging (Note [Shared staging]), the caller
// runs its intra-node stages as whole-vector rings before and after this
// (the rings reuse their slots per call, so they cannot be sliced into pieces
// of one collective); the rail pieces are the same on every node either way.
#include <algorithm>
#include <chrono>
#include <vector>

#include "algorithms/algorithm.h"
#include "algorithms/compressed.h"
#include "algorithms/shared_staging.h"
#include "common/reduce.h"

namespace distx {
namespace {

constexpr uint32_t kDenseRedoPhase = 5;  // a cast piece redone densely (1-4: the
                                         // stages of allreduce_hierarchical.cpp)

struct PieceRequests {
  std::vector<RequestPtr> rsRecv, rsSend, agRecv, agSend;
  std::vector<int> rsFrom, rsTo, agFrom, agTo;  // the rail rank of each request
};

// Carves one scratch allocation into aligned areas.
struct Carve {
  uint8_t* base;
  size_t used = 0;
  uint8_t* take(size_t bytes) {
    uint8_t* p = base + used;
    used += (bytes + 63) & ~size_t{63};
    return p;
  }
};

}  // namespace

void allreduceSplitRailPipelined(CollectiveContext* shmNode, SharedStaging* st,
                                 CollectiveContext& rail, int g, int l, void* data, size_t count,
                                 DType dt, ReduceOp op, size_t pieceElems, const RailCast* cast) {
  if (!shmNode) st = nullptr;
  const int n = rail.size(), me = rail.rank();
  const int P = g * n;
  const ReduceOp stageOp = op == ReduceOp::kAvg ? ReduceOp::kSum : op;
  DISTX_CHECK(!cast || (dt == DType::kFloat32 && stageOp == ReduceOp::kSum), InvalidArgument,
              "a cast split-rail needs float32 SUM or AVG, got ", dtypeName(dt), " ",
              reduceOpName(op));
  const size_t elem = dtypeSize(dt);
  const size_t wire = cast ? sizeof(uint16_t) : elem;  // bytes per element on the rail
  const Segments seg{count, g};
  pieceElems = std::max<size_t>(1, pieceElems);
  const uint64_t pieces = (seg.size(0) + pieceElems - 1) / pieceElems;  // equal on every rank
  checkSlots(rail, 2 * pieces);
  auto* mine = static_cast<uint8_t*>(data) + seg.offset(l) * elem;
  const size_t mineCount = seg.size(l);

  // Scratch, two pieces of each in flight: the reduce-scatter's inboxes (n-1
  // peers); with a cast also the encoded piece (sent), the gathered piece
  // and the float32 sum and decode buffers of one sub-chunk.
  const size_t maxSub = (pieceElems + n - 1) / n;
  const size_t inboxBytes = static_cast<size_t>(n - 1) * maxSub * wire;
  const size_t pieceWire = pieceElems * wire;
  const size_t need =
      2 * (inboxBytes + 64) + (cast ? 4 * (pieceWire + 64) + 2 * (maxSub * sizeof(float) + 64) : 0);
  std::vector<uint8_t> owned;
  Carve carve{rail.scratchBytes(need)};
  if (!carve.base) {
    owned.resize(need);
    carve.base = owned.data();
  }
  uint8_t* inboxes[2] = {carve.take(inboxBytes), carve.take(inboxBytes)};
  uint8_t* encoded[2] = {nullptr, nullptr};
  uint8_t* gathered[2] = {nullptr, nullptr};
  float *acc = nullptr, *tmp = nullptr;
  if (cast) {
    encoded[0] = carve.take(pieceWire);
    encoded[1] = carve.take(pieceWire);
    gathered[0] = carve.take(pieceWire);
    gathered[1] = carve.take(pieceWire);
    acc = reinterpret_cast<float*>(carve.take(maxSub * sizeof(float)));
    tmp = reinterpret_cast<float*>(carve.take(maxSub * sizeof(float)));
  }
  uint64_t wireBytes = 0, codecNanos = 0, redos = 0;
  auto timed = [&](auto&& fn) {
    const auto t0 = Clock::now();
    fn();
    codecNanos += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  };

  auto inbox = [&](uint64_t k, int j) {
    return inboxes[k % 2] + static_cast<size_t>(j < me ? j : j - 1) * maxSub * wire;
  };
  auto pieceStart = [&](uint64_t k) {
    return std::min(mineCount, static_cast<size_t>(k) * pieceElems);
  };
  auto pieceSub = [&](uint64_t k) {
    return Segments{std::min(pieceElems, mineCount - pieceStart(k)), n};
  };
  // Sub-chunk j of piece k in the vector, and in the wire buffers.
  auto subAt = [&](uint64_t k, int j) {
    return mine + (pieceStart(k) + pieceSub(k).offset(j)) * elem;
  };
  auto wireAt = [&](uint8_t* const(&buf)[2], uint64_t k, int j) {
    return buf[k % 2] + pieceSub(k).offset(j) * wire;
  };
  auto checkSize = [&](Request& req, size_t want, int from) {
    DISTX_CHECK(!receivedSizeMismatch(req, want), InvalidArgument, "split-rail: rank ",
                rail.groupRank(from), " sent ", req.receivedBytes(),
                " bytes for a piece, expected ", want,
                " (the ranks disagree on the element count)");
  };

  std::vector<PieceRequests> reqs(pieces);
  auto startReduceScatter = [&](uint64_t k) {
    const Segments sub = pieceSub(k);
    PieceRequests& q = reqs[k];
    if (cast && sub.count) {
      timed([&] {
        cast->encode(reinterpret_cast<const float*>(mine) + pieceStart(k),
                     reinterpret_cast<uint16_t*>(encoded[k % 2]), sub.count, 1.0f);
      });
    }
    if (const size_t want = sub.size(me)) {
      for (int j = 0; j < n; ++j) {
        if (j == me) continue;
        q.rsRecv.push_back(rail.recv(j, 2 * k, inbox(k, j), want * wire));
        q.rsFrom.push_back(j);
      }
    }
    for (int j = 0; j < n; ++j) {
      if (j == me || !sub.size(j)) continue;
      const void* src = cast ? wireAt(encoded, k, j) : subAt(k, j);
      q.rsSend.push_back(rail.send(j, 2 * k, src, sub.size(j) * wire));
      q.rsTo.push_back(j);
      wireBytes += sub.size(j) * wire;
    }
  };
  auto reduceAndGather = [&](uint64_t k) {
    const Segments sub = pieceSub(k);
    PieceRequests& q = reqs[k];
    const size_t own = sub.size(me);
    for (size_t i = 0; i < q.rsRecv.size(); ++i) {
      rail.wait(*q.rsRecv[i], "recv from", q.rsFrom[i]);
      checkSize(*q.rsRecv[i], own * wire, q.rsFrom[i]);
    }
    // This rank's reduced sub-chunk: in place, or (cast) encoded into the
    // gathered piece, the vector's float32 values left as they are.
    uint8_t* dst = cast ? wireAt(gathered, k, me) : subAt(k, me);
    if (own && cast) {
      timed([&] {
        for (int j = 0; j < n; ++j) {
          const auto* src =
              reinterpret_cast<const uint16_t*>(j == me ? wireAt(encoded, k, me) : inbox(k, j));
          cast->decode(src, j == 0 ? acc : tmp, own);
          if (j > 0) reduceInto(acc, tmp, own, DType::kFloat32, ReduceOp::kSum);
        }
        const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(P) : 1.0f;
        cast->encode(acc, reinterpret_cast<uint16_t*>(dst), own, scale);
      });
    } else if (own) {
      for (int j = 0; j < n; ++j) {
        if (j != me) reduceInto(dst, inbox(k, j), own, dt, stageOp);
      }
      if (op == ReduceOp::kAvg) finishAvg(dst, own, dt, P);
    }
    for (size_t i = 0; i < q.rsSend.size(); ++i)
      rail.wait(*q.rsSend[i], "send to", q.rsTo[i]);
    q.rsRecv.clear();
    q.rsSend.clear();
    for (int j = 0; j < n; ++j) {
      if (j == me || !sub.size(j)) continue;
      void* into = cast ? wireAt(gathered, k, j) : subAt(k, j);
      q.agRecv.push_back(rail.recv(j, 2 * k + 1, into, sub.size(j) * wire));
      q.agFrom.push_back(j);
    }
    if (own) {
      for (int j = 0; j < n; ++j) {
        if (j == me) continue;
        q.agSend.push_back(rail.send(j, 2 * k + 1, dst, own * wire));
        q.agTo.push_back(j);
        wireBytes += own * wire;
      }
    }
  };
  auto finish = [&](uint64_t k) {
    const Segments sub = pieceSub(k);
    PieceRequests& q = reqs[k];
    for (size_t i = 0; i < q.agRecv.size(); ++i) {
      rail.wait(*q.agRecv[i], "recv from", q.agFrom[i]);
      checkSize(*q.agRecv[i], sub.size(q.agFrom[i]) * wire, q.agFrom[i]);
    }
    // The next use of this piece's buffers (piece k + 2) writes what these
    // sends read.
    for (size_t i = 0; i < q.agSend.size(); ++i)
      rail.wait(*q.agSend[i], "send to", q.agTo[i]);
    q.agRecv.clear();
    q.agSend.clear();
    if (cast && sub.count) {
      const auto* payload = reinterpret_cast<const uint16_t*>(gathered[k % 2]);
      size_t bad = 0;
      timed([&] { bad = cast->countNonFinite(payload, sub.count); });
      if (bad == 0) {
        timed([&] {
          cast->decode(payload, reinterpret_cast<float*>(mine) + pieceStart(k), sub.count);
        });
      } else {  // every rail rank saw the same payload: all redo the piece
        ++redos;
        std::vector<int> all(n);
        for (int j = 0; j < n; ++j)
          all[j] = j;
        auto dense = rail.narrow(all, kDenseRedoPhase);
        auto* piece = reinterpret_cast<float*>(mine) + pieceStart(k);
        allreduceRing(dense, piece, sub.count, DType::kFloat32, ReduceOp::kSum);
        if (op == ReduceOp::kAvg) finishAvg(piece, sub.count, dt, P);
        wireBytes += denseRingBytes(sub.count, sizeof(float), n, me);
      }
    }
    if (st) {
      shmSegmentAllgather(*shmNode, *st, data, count, dt, k * pieceElems, (k + 1) * pieceElems);
    }
  };

  for (uint64_t k = 0; k < pieces + 2; ++k) {
    if (k < pieces) {
      if (st)
        shmSegmentReduceScatter(*shmNode, *st, data, count, dt, stageOp, k * pieceElems,
                                (k + 1) * pieceElems);
      startReduceScatter(k);
    }
    if (k >= 1 && k - 1 < pieces) reduceAndGather(k - 1);
    if (k >= 2) finish(k - 2);
  }

  if (cast) cast->account(mineCount, n, me, wireBytes, codecNanos, redos);
}

}  // namespace distx
