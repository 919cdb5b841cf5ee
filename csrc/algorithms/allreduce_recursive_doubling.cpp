// Recursive-doubling all-reduce: the latency-optimal choice for small messages.
//
// Terms: P2 = the largest power of two <= P, rem = P - P2. Ranks below 2·rem
// pair up (even r with r+1) so that P2 "virtual" ranks remain:
//   fold     even r < 2·rem sends its whole vector to r+1 and sits out;
//            odd r < 2·rem becomes virtual rank r/2, the others r - rem.
//   rounds   for mask = 1, 2, 4 … < P2: exchange the whole vector with virtual
//            rank v ^ mask and reduce.
//   unfold   odd r < 2·rem sends the result back to r-1.
// Invariant: after the round with mask m, a virtual rank holds the reduction
// over the 2m virtual ranks that agree with it above bit log2(m). Each pair
// combines its two operands lower virtual rank first, so both ends compute
// the same value bit for bit (even for MIN/MAX with NaN, where the kernel's
// result depends on operand order); all ranks end with identical results. The
// running value alternates between `data` and one scratch vector, so no
// round copies; the result lands in `data` with at most one copy.
// AVG is reduced as SUM and divided once after the last round.
//
// Cost: log2(P2) rounds (+2 if P is not a power of two), each sending the
// whole vector: a rank sends n·log2(P2) elements (+n for odd r < 2·rem;
// n in total for even r < 2·rem). Bandwidth is worse than the ring's
// 2(P-1)/P·n, latency far better (log2 P steps against 2(P-1)).
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
  int p2 = 1;
  while (p2 * 2 <= P)
    p2 *= 2;
  const int rem = P - p2;

  if (r < 2 * rem && r % 2 == 0) {  // folded out: contribute, then take the result
    auto sreq = ctx.send(r + 1, kFoldSlot, data, bytes);
    ctx.wait(*sreq, "fold send to", r + 1);
    auto rreq = ctx.recv(r + 1, kUnfoldSlot, data, bytes);
    ctx.wait(*rreq, "unfold recv from", r + 1);
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

  int v = r - rem;
  if (r < 2 * rem) {  // odd: absorb the even neighbour (the lower rank goes first)
    v = r / 2;
    auto rreq = ctx.recv(r - 1, kFoldSlot, other, bytes);
    ctx.wait(*rreq, "fold recv from", r - 1);
    reduceInto(other, cur, count, dt, op);
    std::swap(cur, other);
  }
  auto realRank = [rem](int virt) { return virt < rem ? 2 * virt + 1 : virt + rem; };

  uint64_t round = 0;
  for (int mask = 1; mask < p2; mask <<= 1, ++round) {
    const int pv = v ^ mask, peer = realRank(pv);
    auto rreq = ctx.recv(peer, kFirstRoundSlot + round, other, bytes);
    auto sreq = ctx.send(peer, kFirstRoundSlot + round, cur, bytes);
    ctx.wait(*rreq, "recv from", peer);
    ctx.wait(*sreq, "send to", peer);
    if (pv < v) {  // the peer's value is the left operand
      reduceInto(other, cur, count, dt, op);
      std::swap(cur, other);
    } else {
      reduceInto(cur, other, count, dt, op);
    }
  }
  if (op == ReduceOp::kAvg) finishAvg(cur, count, dt, P);
  if (cur != data) std::memcpy(data, cur, bytes);

  if (r < 2 * rem) {
    auto sreq = ctx.send(r - 1, kUnfoldSlot, data, bytes);
    ctx.wait(*sreq, "unfold send to", r - 1);
  }
}

}  // namespace distx
