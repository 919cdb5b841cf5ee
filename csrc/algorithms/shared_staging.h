// Shared-memory staging for the one-host all-reduce (allreduce_shm.cpp).
//
// Note [Shared staging]
// Between ranks of one host, UCX moves a large message with one CMA copy
// (process_vm_readv) per message. On the 2-core VM that copy runs at about
// 5 GB/s against 13-20 GB/s for memcpy, and the ring pays it twice per byte
// (reduce-scatter, then all-gather): a 64 MiB all-reduce on 2 ranks spent
// about 15 ms of its 23-28 ms in the kernel. So ranks that share a host
// reduce through persistent shared buffers instead, in plain memory:
//  - every rank of the group owns one POSIX shared-memory segment, made on
//    the group's first such all-reduce and mapped by every other rank; the
//    names travel in that collective's own messages, and each owner unlinks
//    its name as soon as every peer has mapped it (nothing is left in
//    /dev/shm when a process dies later);
//  - a segment holds three progress counters (its owner's) and two slots, so
//    consecutive blocks alternate; a slot holds one sub-chunk for every rank
//    (`in`) and the owner's reduced sub-chunk (`out`);
//  - the algorithm waits on the peers' counters in the mapped memory, never
//    on UCX: it spins (yielding) for 200 us, then sleeps on a futex in the
//    peer's segment until the peer publishes (Note [Staging wake-ups]),
//    waking at least every 1 ms to check the deadline and the peer's
//    liveness. Counters only grow (they count blocks over the group's life),
//    so consecutive all-reduces need no reset, and every wait names the peer;
//  - on a group that spans hosts the staging serves the hierarchical
//    all-reduce's intra-node stages and spans the rank's node
//    (shm_segment_stages.cpp); on one host, the whole group;
//  - each call first posts its identity (sequence number, count, dtype, op)
//    and checks the peers' before touching a block: mismatched calls raise
//    on every rank alike (InvalidArgument naming both sides) and leave the
//    counters in step, where blocks of different calls would otherwise mix.
//    A posted identity stays readable until every peer has read it: a call
//    with no elements posts none, and one with blocks cannot end on any rank
//    before every peer has passed its own check.
// Setting up is collective and agreed: each rank reports whether it could
// create and map the segments, and all ranks fall back to the ring together
// if any could not (e.g. a full /dev/shm). After a failed wait (timeout, dead
// peer) the counters no longer agree, so the staging refuses every later
// call with the first error instead of mixing blocks.
// Departure from the blueprint ("algorithms reach the network only through
// CollectiveContext"): this algorithm's bulk data bypasses the transport. The
// mapping and the futex waits are transport mechanism
// (transport/shm/shm_segment.h); the agreement, the call identities and the
// block schedules (allreduce_shm.cpp, shm_segment_stages.cpp) stay here.
//
// Note [Staging wake-ups]
// A rank that has spun 200 us for a peer's counter sleeps on a futex: a
// 32-bit epoch in the peer's control block, which the peer bumps after every
// publish, waking sleepers when its `sleepers` count says there are any (one
// atomic add per publish otherwise, no system call). The futex is shared, not
// process-private: the word lives in the mapped segment. The sleep is capped
// at 1 ms so the waiter still checks its deadline and the peer's liveness.
// Before, the waiter slept in growing naps (20 us .. 1 ms) and overslept by
// up to a nap each time a peer was late: harmless when a wait spans a whole
// all-reduce, but the pipelined split-rail (Note [Pipelined split-rail])
// waits on its node peers once per piece, between network waits.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "transport/shm/shm_segment.h"

namespace distx {

struct CollectiveContext;

class SharedStaging {
 public:
  // Bytes per rank per block: a block of the tensor is size() x slotBytes.
  // 256 KiB: 2 ranks on the 2-core VM, barrier-separated, 2 MiB took 160 us
  // with 256 KiB slots, 340 us with 512 KiB, 490 us with 1 MiB; 64 MiB
  // 7.5-9.8 ms with any of them (benchmarks/allreduce.py).
  static constexpr size_t kDefaultSlotBytes = 256 * 1024;

  explicit SharedStaging(size_t slotBytes = kDefaultSlotBytes);
  ~SharedStaging();
  SharedStaging(const SharedStaging&) = delete;
  SharedStaging& operator=(const SharedStaging&) = delete;

  // Makes and maps the segments on first use, inside a collective that every
  // rank of ctx runs (ctx must span the whole group, with its slots 0 and 1
  // free). True when the staging can be used; the same answer on every rank.
  // Throws the first error again after a failed wait.
  bool ready(CollectiveContext& ctx);

  size_t slotBytes() const { return slotBytes_; }
  int size() const { return static_cast<int>(segments_.size()); }

  // Progress counters: kCalls in calls, the others in blocks since the
  // group began.
  enum Counter { kCopied = 0, kReduced = 1, kConsumed = 2, kCalls = 3 };
  // What a call posts before its first block.
  struct Call {
    uint64_t seq = 0, count = 0;
    uint32_t dtype = 0, op = 0;
    bool operator==(const Call& o) const {
      return seq == o.seq && count == o.count && dtype == o.dtype && op == o.op;
    }
  };
  // Posts this rank's call, waits for every peer's, and returns them (this
  // rank's included), indexed by rank.
  std::vector<Call> announce(CollectiveContext& ctx, const Call& mine);
  // Block `global`'s slot of rank `owner`: the sub-chunk for rank j (in) and
  // the owner's reduced sub-chunk (out).
  uint8_t* in(int owner, uint64_t global, int j) const;
  uint8_t* out(int owner, uint64_t global) const;
  void publish(Counter c, uint64_t value);
  // Waits until every other rank's counter c is >= value; throws Timeout or
  // PeerFailure (and remembers it) on the deadline or a transport abort.
  void waitPeers(CollectiveContext& ctx, Counter c, uint64_t value);

  // Blocks handed out so far; every rank advances it alike.
  uint64_t blocks() const { return blocks_; }
  void advance(uint64_t n) { blocks_ += n; }

 private:
  size_t segmentBytes(int P) const;
  shm::ControlBlock& control(int owner) const;

  const size_t slotBytes_;
  int me_ = -1;
  enum class State { kFresh, kReady, kUnavailable } state_ = State::kFresh;
  std::string failure_;                 // non-empty after a failed wait
  std::vector<shm::Segment> segments_;  // one per rank of the staging; this rank's is its own
  size_t mappedBytes_ = 0;
  uint64_t blocks_ = 0;
  uint64_t calls_ = 0;
};

// Posts this call (ctx.seq, count, dt, op) and raises InvalidArgument, on
// every rank of ctx alike, if any peer's differs.
void checkSameCall(CollectiveContext& ctx, SharedStaging& st, size_t count, DType dt, ReduceOp op);

}  // namespace distx
