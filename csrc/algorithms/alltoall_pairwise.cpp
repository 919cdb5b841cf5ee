// Pairwise-exchange all-to-all with per-peer sizes (all_to_all_single with
// split sizes, list all_to_all with tensors of different sizes).
//
// Schedule: step s = 1 … P-1 sends send[(r+s) mod P] to rank r+s and receives
// recv[(r-s) mod P] from rank r-s, so every step is a permutation: each rank
// sends one message and receives one, and no receiver is flooded by P-1
// senders at once. Up to kWindow steps are in flight (receives are posted
// before the matching sends) to hide latency; the own block is copied locally.
// Every pair exchanges a message even when it is empty, so both ends can check
// that the sizes agree.
// Invariant: recv[p] holds exactly rank p's send[r]; a size disagreement
// between two ranks' split sizes is an InvalidArgument on the receiver (a
// larger message: TransportError from the truncation), never a hang.
//
// Cost: P-1 latency steps (overlapped kWindow at a time); a rank sends
// sum_{p != r} sendBytes[p] and receives sum_{p != r} recvBytes[p].
#include <algorithm>
#include <cstring>

#include "algorithms/algorithm.h"

namespace distx {
namespace {

constexpr int kWindow = 8;  // steps whose messages may be in flight at once

}  // namespace

void alltoallPairwise(CollectiveContext& ctx, const std::vector<const void*>& send,
                      const std::vector<size_t>& sendBytes, const std::vector<void*>& recv,
                      const std::vector<size_t>& recvBytes) {
  const int P = ctx.size(), r = ctx.rank();
  DISTX_CHECK(static_cast<int>(send.size()) == P && static_cast<int>(sendBytes.size()) == P &&
                  static_cast<int>(recv.size()) == P && static_cast<int>(recvBytes.size()) == P,
              InvalidArgument, "all_to_all: expected ", P, " blocks each way, got ", send.size(),
              "/", sendBytes.size(), " to send and ", recv.size(), "/", recvBytes.size(),
              " to receive");
  DISTX_CHECK(sendBytes[r] == recvBytes[r], InvalidArgument, "all_to_all: rank ", r, " sends ",
              sendBytes[r], " bytes to itself but expects ", recvBytes[r]);
  if (sendBytes[r] > 0 && send[r] != recv[r]) std::memmove(recv[r], send[r], sendBytes[r]);
  if (P == 1) return;

  struct Step {
    int to, from;
    RequestPtr sreq, rreq;
  };
  std::vector<Step> steps(P);  // steps[s], s = 1 … P-1
  auto post = [&](int s) {
    Step& st = steps[s];
    st.to = mod(r + s, P);
    st.from = mod(r - s, P);
    st.rreq = ctx.recv(st.from, 0, recv[st.from], recvBytes[st.from]);
    st.sreq = ctx.send(st.to, 0, send[st.to], sendBytes[st.to]);
  };
  auto finish = [&](int s) {
    Step& st = steps[s];
    ctx.wait(*st.rreq, "recv from", st.from);
    DISTX_CHECK(!receivedSizeMismatch(*st.rreq, recvBytes[st.from]), InvalidArgument,
                "all_to_all: rank ", st.from, " sent ", st.rreq->receivedBytes(),
                " bytes but rank ", r, " expected ", recvBytes[st.from],
                " (the split sizes of the two ranks disagree)");
    ctx.wait(*st.sreq, "send to", st.to);
    st.rreq.reset();
    st.sreq.reset();
  };

  int next = 1;
  for (; next < P && next <= kWindow; ++next)
    post(next);
  for (int s = 1; s < P; ++s) {
    finish(s);
    if (next < P) post(next++);
  }
}

}  // namespace distx
