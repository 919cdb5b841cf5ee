// Note [PS shard]
// One server's state: the keys it owns (Layout), their fp32 parameters and
// optimizer state, and per key a clock for each worker. Pure logic, no
// transport: Shard::handle() takes one received message and appends the
// messages to send. ServerLoop (server.h) feeds it from a Transport; tests and
// the fuzzer call it directly.
//
// Consistency (SSP, staleness s): worker w's push at clock c (c = its previous
// clock + 1) is applied at once; its pull for clock c is answered as soon as
// min over live workers of clock[w'] >= c - s, and queued until then; s < 0
// answers at once (asynchronous). With s = 0 a push and its pull travel in one
// kPushPull message, so every worker's reply for clock c holds exactly the
// updates of clocks <= c: synchronous SGD on the summed update. In server mode
// with s = 0 the shard sums the round's gradients and runs one optimizer step
// when the last live worker's push arrives (so momentum/Adam see the summed
// gradient, as DDP with a summing all-reduce); otherwise every push is one step.
//
// Note [PS clocks per chunk]: the blueprint puts one clock table per shard; here
// each chunk (key) has its own. Every worker pushes every chunk once per step,
// so the two agree at step boundaries, and per-chunk tables need no cross-chunk
// bookkeeping (a shard answers a chunk's pull without waiting for its others).
//
// A worker that left (kLeave: done pushing, e.g. in detach()) or died leaves
// the live set; one that left may still read state (kGetState) until it closes.
// A dead or departed worker leaves the live set: the minimum no longer waits
// for it, and pulls queued behind it are released.
//
// Validation (Note [PS wire format]): every check runs before any state is
// touched; a rejected message changes nothing but the rejection counters and
// (when its header was well formed) produces a kError reply to its sender.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <vector>

#include "ps/layout.h"
#include "ps/optimizer.h"
#include "ps/wire.h"

namespace distx::ps {

struct Outgoing {
  int dst;
  std::vector<uint8_t> bytes;
};

// Decodes one push's payload (Note [PS compressed pushes]) for a key of `n`
// elements into `dense`. Checks the count and top-k indices; values are
// checked (finite) by the caller. The header must have passed decode().
RejectReason decodePush(const Header& h, const uint8_t* payload, size_t n,
                        std::vector<float>& dense);

class Shard {
 public:
  Shard(const Layout& layout, int rank, std::vector<int> workers, int staleness,
        OptimizerConfig opt);

  // Initial parameters of every key this shard owns, read from the full flat vector.
  void init(const float* flat);

  // One message received from transport rank `src`. Returns kNone if applied.
  RejectReason handle(int src, const uint8_t* data, size_t bytes, std::vector<Outgoing>& out);
  // A transport-level failure to receive (e.g. an oversized message truncated).
  void countReject(RejectReason r) { ++rejected_[static_cast<size_t>(r)]; }

  // Worker `rank` died or left: drop it from every clock table.
  void dropWorker(int rank, std::vector<Outgoing>& out);

  bool anyWorkerLive() const;
  // False once every worker has closed (kClose) or died: the shard can end.
  bool anyWorkerOpen() const;
  int64_t minClock(uint32_t key) const;  // over live workers; int64 max when none
  uint64_t rejected(RejectReason r) const { return rejected_[static_cast<size_t>(r)]; }
  uint64_t rejectedTotal() const;
  uint64_t applied() const { return applied_; }
  size_t maxPayloadBytes() const { return maxPayload_; }
  const std::vector<uint32_t>& keys() const { return keyList_; }
  const std::vector<float>& params(uint32_t key) const { return keys_.at(key).params; }

  // Checkpoint blob of one key: params, optimizer slots, step, clock per worker.
  std::vector<uint8_t> stateBlob(uint32_t key) const;
  bool loadStateBlob(uint32_t key, const uint8_t* data, size_t bytes);

 private:
  struct Pending {
    int worker;  // rank
    int64_t clock;
  };
  struct KeyState {
    std::vector<float> params;
    OptimizerState opt;
    std::vector<int64_t> clock;  // per worker slot
    std::vector<Pending> pending;
    std::vector<float> roundSum;  // server mode, s = 0: gradients of the open round
    int64_t roundClock = 0;       // the open round's clock (0: none open)
    double roundLr = 0;
  };
  bool aggregates() const { return staleness_ == 0 && opt_.kind != OptimizerConfig::Kind::kAdd; }
  void closeRound(KeyState& ks);
  size_t blobBytes(const KeyState& k) const;
  void reply(uint32_t key, KeyState& ks, int worker, int64_t clock, std::vector<Outgoing>& out);
  void releasePending(uint32_t key, KeyState& ks, std::vector<Outgoing>& out);
  void error(int dst, const Header& h, RejectReason r, std::vector<Outgoing>& out);
  int64_t minLive(const KeyState& ks) const;
  void leaveWorker(int rank, std::vector<Outgoing>& out);  // out of the clocks, may still read

  const Layout layout_;
  const int rank_;
  const std::vector<int> workers_;
  std::vector<int> slotOf_;  // rank -> worker slot, -1 when not a worker
  std::vector<bool> live_;   // per worker slot: counted in the minimum clock
  std::vector<bool> open_;   // per worker slot: not closed or dead (may still read state)
  const int staleness_;
  const OptimizerConfig opt_;
  std::map<uint32_t, KeyState> keys_;
  std::vector<uint32_t> keyList_;
  size_t maxPayload_ = 0;
  std::array<uint64_t, static_cast<size_t>(RejectReason::kCount_)> rejected_{};
  uint64_t applied_ = 0;
};

}  // namespace distx::ps
