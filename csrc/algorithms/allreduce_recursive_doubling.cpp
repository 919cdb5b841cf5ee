// Recursive-doubling all-reduce: the latency-optimal choice for small messages.
//
// Terms: P2 = the largest power of two <= P, rem = P - P2. The rem ranks
// above P2 fold into the ranks below rem so that P2 ranks remain:
//   fold     rank r >= P2 sends its whole vector to r - P2 and sits out;
//            rank r < rem reduces it into its own.
//   rounds   for mask = 1, 2, 4 … < P2: ranks r < P2 exchange the whole vector
//            with r ^ mask and reduce.
//   unfold   rank r < rem sends the result to r + P2.
// Invariant: after the round with mask m, a rank holds the reduction over the
// 2m ranks that agree with it above bit log2(m) (their folded partners
// included). Each pair combines its two operands lower rank first, so both
// ends compute the same value bit for bit (even for MIN/MAX with NaN, where
// the kernel's result depends on operand order); all ranks end with identical
// results. The running value alternates between `data` and one scratch
// vector, so no round copies; the result lands in `data` with at most one
// copy. AVG is reduced as SUM and divided once after the last round.
//
// Cost: log2(P2) rounds (+2 if P is not a power of two), each sending the
// whole vector: a rank sends n·log2(P2) elements (+n for r < rem; n in total
// for r >= P2). Bandwidth is worse than the ring's 2(P-1)/P·n, latency far
// better (log2 P steps against 2(P-1)).
#include <cstring>
#include <utility>
#include <vector>

#include "algorithms/algorithm.h"
#include "common/reduce.h"

namespace distx {
namespace {

constexpr uint64_t kFoldSlot = 0;
constexpr uint64_t kUnfoldSlot = 1;
constexpr uint64_t kFirstRoundSlot = 2;  // round k uses slot kFirstRoundSlot + k

}  // namespace

void allreduceRecursiveDoubling(CollectiveContext& ctx, void* data, size_t count, DType dt,
                                ReduceOp op) {
  const int P = ctx.size(), r = ctx.rank();
  if (P == 1 || count == 0) return;
  const size_t bytes = count * dtypeSize(dt);
  int p2 = 1;  // the largest power of two <= P
  while (p2 * 2 <= P) {
    p2 *= 2;
  }
  const int rem = P - p2;

  if (r >= p2) {  // folded out: contribute, then take the result
    auto sreq = ctx.send(r - p2, kFoldSlot, data, bytes);
    ctx.wait(*sreq, "fold send to", r - p2);
    auto rreq = ctx.recv(r - p2, kUnfoldSlot, data, bytes);
    ctx.wait(*rreq, "unfold recv from", r - p2);
    return;
  }

  uint8_t* scratch = ctx.scratchBytes(bytes);
  std::vector<uint8_t> owned;
  if (!scratch) {
    owned.resize(bytes);
    scratch = owned.data();
  }
  uint8_t* cur = static_cast<uint8_t*>(data);  // the running value
  uint8_t* other = scratch;                    // where the partner's value lands

  if (r < rem) {  // absorb r + P2 (this rank is the lower one: its value goes first)
    auto rreq = ctx.recv(r + p2, kFoldSlot, other, bytes);
    ctx.wait(*rreq, "fold recv from", r + p2);
    reduceInto(cur, other, count, dt, op);
  }

  uint64_t round = 0;
  for (int mask = 1; mask < p2; mask <<= 1, ++round) {
    const int peer = r ^ mask;
    auto rreq = ctx.recv(peer, kFirstRoundSlot + round, other, bytes);
    auto sreq = ctx.send(peer, kFirstRoundSlot + round, cur, bytes);
    ctx.wait(*rreq, "recv from", peer);
    ctx.wait(*sreq, "send to", peer);
    if (peer < r) {  // the peer's value is the left operand
      reduceInto(other, cur, count, dt, op);
      std::swap(cur, other);
    } else {
      reduceInto(cur, other, count, dt, op);
    }
  }
  if (op == ReduceOp::kAvg) finishAvg(cur, count, dt, P);
  if (cur != data) std::memcpy(data, cur, bytes);

  if (r < rem) {
    auto sreq = ctx.send(r + p2, kUnfoldSlot, data, bytes);
    ctx.wait(*sreq, "unfold send to", r + p2);
  }
}

}  // namespace distx
