// Note [Shared staging] (shared_staging.h): segments, set-up, counters.
#include "algorithms/shared_staging.h"

#include <chrono>
#include <cstring>

#include "algorithms/algorithm.h"
#include "common/error.h"
#include "common/logging.h"

namespace distx {

namespace {

// How long a wait spins before it sleeps, and its longest sleep (Note
// [Staging wake-ups]).
constexpr auto kSpin = std::chrono::microseconds(200);
constexpr auto kNapCap = std::chrono::microseconds(1000);
static_assert(sizeof(SharedStaging::Call) <= shm::ControlBlock::kPayloadBytes,
              "a call's identity must fit the control block's payload");

// One set-up message: whether the sender got this far, and its segment name.
struct Hello {
  uint8_t ok = 0;
  char name[63] = {};
};

// What a wait on counter c is waiting for, e.g. "reduced block 5".
const char* awaited(SharedStaging::Counter c) {
  switch (c) {
    case SharedStaging::kCopied:
      return "staged block";
    case SharedStaging::kReduced:
      return "reduced block";
    case SharedStaging::kCalls:
      return "start of call";
    default:
      return "collected block";
  }
}

// Sends `mine` to every other rank of ctx on `slot` and returns what each sent.
std::vector<Hello> exchange(CollectiveContext& ctx, uint64_t slot, const Hello& mine) {
  const int P = ctx.size(), me = ctx.rank();
  std::vector<Hello> all(P);
  all[me] = mine;
  std::vector<std::pair<RequestPtr, int>> reqs;
  for (int j = 0; j < P; ++j) {
    if (j == me) continue;
    reqs.emplace_back(ctx.recv(j, slot, &all[j], sizeof(Hello)), j);
  }
  for (int j = 0; j < P; ++j) {
    if (j == me) continue;
    reqs.emplace_back(ctx.send(j, slot, &all[me], sizeof(Hello)), j);
  }
  for (auto& [req, peer] : reqs)
    ctx.wait(*req, "shared-memory staging set-up with", peer);
  return all;
}

}  // namespace

SharedStaging::SharedStaging(size_t slotBytes) : slotBytes_((slotBytes + 63) / 64 * 64) {}

SharedStaging::~SharedStaging() = default;

size_t SharedStaging::segmentBytes(int P) const {
  return shm::kControlBytes + 2 * static_cast<size_t>(P + 1) * slotBytes_;
}

shm::ControlBlock& SharedStaging::control(int owner) const {
  return *segments_[owner].control();
}

uint8_t* SharedStaging::in(int owner, uint64_t global, int j) const {
  const size_t slot = global % 2, P = segments_.size();
  return segments_[owner].data() + shm::kControlBytes + (slot * (P + 1) + j) * slotBytes_;
}

uint8_t* SharedStaging::out(int owner, uint64_t global) const {
  return in(owner, global, static_cast<int>(segments_.size()));
}

void SharedStaging::publish(Counter c, uint64_t value) {
  shm::publish(control(me_), c, value);
}

void SharedStaging::waitPeers(CollectiveContext& ctx, Counter c, uint64_t value) {
  const int P = size();
  for (int j = 0; j < P; ++j) {
    if (j == me_) continue;
    // Spin (yielding: with more ranks than cores the peer we wait for may
    // need this core, Note [Yielding spin]) while the wait is short, as it is
    // when every rank works on the same block; then sleep until the peer
    // publishes (Note [Staging wake-ups]), as when the peer is busy elsewhere
    // (a hierarchical all-reduce's network stage) and spinning ranks would
    // take the CPU it and the network threads need: 2x4 ranks on 2 cores,
    // 1 MiB took 50 ms spinning, against 20 ms for gloo.
    shm::waitCounter(control(j), c, value, kSpin, kNapCap, [&] {
      // "... shared-memory all-reduce: reduced block 5 from rank 2"
      const std::string what = detail::concat("shared-memory all-reduce: ", awaited(c), " ",
                                              value - 1, " from rank ", ctx.groupRank(j));
      try {
        ctx.transport.checkAlive(ctx.groupRank(j), what);
        if (Clock::now() >= ctx.deadline) throw Timeout("Timed out waiting for " + what);
      } catch (const Error& e) {
        failure_ = e.what();
        throw;
      }
    });
  }
}

std::vector<SharedStaging::Call> SharedStaging::announce(CollectiveContext& ctx, const Call& mine) {
  std::memcpy(control(me_).payload, &mine, sizeof mine);
  publish(kCalls, ++calls_);
  waitPeers(ctx, kCalls, calls_);
  std::vector<Call> all(size());
  for (int j = 0; j < size(); ++j)
    std::memcpy(&all[j], control(j).payload, sizeof(Call));
  return all;
}

void checkSameCall(CollectiveContext& ctx, SharedStaging& st, size_t count, DType dt, ReduceOp op) {
  const SharedStaging::Call mine{ctx.seq, count, static_cast<uint32_t>(dt),
                                 static_cast<uint32_t>(op)};
  const auto calls = st.announce(ctx, mine);
  for (int j = 0; j < ctx.size(); ++j) {
    const auto& c = calls[j];
    DISTX_CHECK(c == mine, InvalidArgument, "all_reduce mismatch across ranks: rank ",
                ctx.groupRank(ctx.rank()), " has seq ", mine.seq, ", ", mine.count, " x ",
                dtypeName(dt), ", ", reduceOpName(op), "; rank ", ctx.groupRank(j), " has seq ",
                c.seq, ", ", c.count, " x ", dtypeName(static_cast<DType>(c.dtype)), ", ",
                reduceOpName(static_cast<ReduceOp>(c.op)));
  }
}

bool SharedStaging::ready(CollectiveContext& ctx) {
  if (!failure_.empty())
    throw PeerFailure("the group's shared-memory staging is unusable after an earlier failure (" +
                      failure_ + ")");
  if (state_ == State::kReady) return true;
  if (state_ == State::kUnavailable) return false;
  const int P = ctx.size();
  me_ = ctx.rank();
  mappedBytes_ = segmentBytes(P);
  segments_.clear();
  segments_.resize(P);

  // 1. Make this rank's segment.
  Hello mine;
  const std::string name = shm::Segment::uniqueName();
  std::snprintf(mine.name, sizeof(mine.name), "%s", name.c_str());
  std::string problem;
  segments_[me_] = shm::Segment::create(name, mappedBytes_, &problem);
  const bool created = segments_[me_].valid();  // then `name` is ours to unlink
  mine.ok = created;

  // 2. Learn the others' names; map them where everyone got this far.
  std::vector<Hello> hellos;
  try {
    hellos = exchange(ctx, 0, mine);
  } catch (...) {
    if (created) shm::Segment::unlink(name);
    throw;
  }
  bool all = true;
  for (const auto& h : hellos)
    all = all && h.ok;
  Hello mapped;
  mapped.ok = 0;
  if (all) {
    mapped.ok = 1;
    for (int j = 0; j < P && mapped.ok; ++j) {
      if (j == me_) continue;
      std::string peer(hellos[j].name, strnlen(hellos[j].name, sizeof(hellos[j].name)));
      std::string why;
      segments_[j] = shm::Segment::open(peer, mappedBytes_, &why);
      if (!segments_[j].valid()) {
        problem = detail::concat("mapping rank ", ctx.groupRank(j), "'s ", why);
        mapped.ok = 0;
      }
    }
  } else if (problem.empty()) {
    problem = "a peer could not make its segment";
  }

  // 3. Every peer has opened (or given up on) this rank's segment: unlink it.
  std::vector<Hello> acks;
  try {
    acks = exchange(ctx, 1, mapped);
  } catch (...) {
    if (created) shm::Segment::unlink(name);
    throw;
  }
  if (created) shm::Segment::unlink(name);
  bool usable = true;
  for (const auto& a : acks)
    usable = usable && a.ok;
  if (!usable) {
    segments_.clear();
    state_ = State::kUnavailable;
    DISTX_LOG(LogLevel::kWarn, "", "shared-memory all-reduce unavailable (",
              problem.empty() ? "a peer could not map the segments" : problem,
              "); large all-reduces on this host use the ring");
    return false;
  }
  state_ = State::kReady;
  return true;
}

}  // namespace distx
