// Dissemination barrier: in round k every rank sends a 1-byte token to
// r + 2^k and receives one from r - 2^k; after ceil(log2 P) rounds every rank
// has (transitively) heard from every other.
#include "algorithms/algorithm.h"

namespace distx {

void barrierDissemination(CollectiveContext& ctx) {
  const int P = ctx.size(), r = ctx.rank();
  uint8_t token = 1, sink = 0;
  uint64_t round = 0;
  for (int dist = 1; dist < P; dist <<= 1, ++round) {
    const int to = mod(r + dist, P), from = mod(r - dist, P);
    auto rreq = ctx.recv(from, round, &sink, 1);
    auto sreq = ctx.send(to, round, &token, 1);
    ctx.wait(*rreq, "barrier recv from", from);
    ctx.wait(*sreq, "barrier send to", to);
  }
}

}  // namespace distx
