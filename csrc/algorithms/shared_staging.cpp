// Note [Shared staging] (shared_staging.h): segments, set-up, counters.
#include "algorithms/shared_staging.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "algorithms/algorithm.h"
#include "common/error.h"
#include "common/logging.h"

namespace distx {

struct SharedStaging::Control {
  struct alignas(64) Line {
    std::atomic<uint64_t> value;
  };
  Line counters[4];       // indexed by Counter, owner-written
  alignas(64) Call call;  // written before counters[kCalls] is published
  // Note [Staging wake-ups]: bumped by the owner after every publish; peers
  // sleep on it (futex) and count themselves in `sleepers` meanwhile.
  alignas(64) std::atomic<uint32_t> epoch;
  alignas(64) std::atomic<uint32_t> sleepers;
};

namespace {

constexpr size_t kControlBytes = 4096;
static_assert(sizeof(std::atomic<uint64_t>) == 8 && std::atomic<uint64_t>::is_always_lock_free,
              "shared counters need lock-free 64-bit atomics");
static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint32_t>::is_always_lock_free,
              "a futex word needs a lock-free 32-bit atomic");

// Shared (not process-private) futexes: the words live in MAP_SHARED memory
// that every rank of the node maps.
void futexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::microseconds limit) {
  timespec ts{0, static_cast<long>(limit.count()) * 1000};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

// One set-up message: whether the sender got this far, and its segment name.
struct Hello {
  uint8_t ok = 0;
  char name[63] = {};
};

std::string segmentName() {
  static std::atomic<uint64_t> next{0};
  return detail::concat("/distx-", getpid(), "-", next.fetch_add(1));
}

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

uint8_t* mapSegment(int fd, size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
}

}  // namespace

SharedStaging::SharedStaging(size_t slotBytes) : slotBytes_((slotBytes + 63) / 64 * 64) {
  static_assert(sizeof(Control) <= kControlBytes, "control page overflow");
}

SharedStaging::~SharedStaging() {
  unmapAll();
}

void SharedStaging::unmapAll() {
  for (auto* s : segments_) {
    if (s) munmap(s, mappedBytes_);
  }
  segments_.clear();
}

size_t SharedStaging::segmentBytes(int P) const {
  return kControlBytes + 2 * static_cast<size_t>(P + 1) * slotBytes_;
}

SharedStaging::Control* SharedStaging::control(int owner) const {
  static_assert(sizeof(Control) <= kControlBytes, "the control block outgrew its page");
  return reinterpret_cast<Control*>(segments_[owner]);
}

uint8_t* SharedStaging::in(int owner, uint64_t global, int j) const {
  const size_t slot = global % 2, P = segments_.size();
  return segments_[owner] + kControlBytes + (slot * (P + 1) + j) * slotBytes_;
}

uint8_t* SharedStaging::out(int owner, uint64_t global) const {
  return in(owner, global, static_cast<int>(segments_.size()));
}

void SharedStaging::publish(Counter c, uint64_t value) {
  Control* mine = control(me_);
  mine->counters[c].value.store(value, std::memory_order_release);
  // Note [Staging wake-ups]: the epoch bump and the sleepers load are
  // seq_cst, as are a sleeper's increment and epoch load: either this rank
  // sees the sleeper and wakes it, or the sleeper sees the new epoch (and
  // the counter) and does not sleep.
  mine->epoch.fetch_add(1, std::memory_order_seq_cst);
  if (mine->sleepers.load(std::memory_order_seq_cst) > 0) futexWakeAll(&mine->epoch);
}

void SharedStaging::waitPeers(CollectiveContext& ctx, Counter c, uint64_t value) {
  const int P = size();
  for (int j = 0; j < P; ++j) {
    if (j == me_) continue;
    const auto& counter = control(j)->counters[c].value;
    if (counter.load(std::memory_order_acquire) >= value) continue;
    // Spin (yielding: with more ranks than cores the peer we wait for may
    // need this core, Note [Yielding spin]) while the wait is short, as it is
    // when every rank works on the same block; then sleep until the peer
    // publishes (Note [Staging wake-ups]), as when the peer is busy elsewhere
    // (a hierarchical all-reduce's network stage) and spinning ranks would
    // take the CPU it and the network threads need: 2x4 ranks on 2 cores,
    // 1 MiB took 50 ms spinning, against 20 ms for gloo.
    const auto spinUntil = Clock::now() + std::chrono::microseconds(200);
    Control* peer = control(j);
    unsigned iter = 0;
    while (counter.load(std::memory_order_acquire) < value) {
      const bool spinning = Clock::now() < spinUntil;
      if (spinning) {
        std::this_thread::yield();
        if ((++iter & 255) != 0) continue;
      } else {
        peer->sleepers.fetch_add(1, std::memory_order_seq_cst);
        const uint32_t seen = peer->epoch.load(std::memory_order_seq_cst);
        if (counter.load(std::memory_order_acquire) < value)
          futexWait(&peer->epoch, seen, std::chrono::microseconds(1000));
        peer->sleepers.fetch_sub(1, std::memory_order_seq_cst);
      }
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
    }
  }
}

std::vector<SharedStaging::Call> SharedStaging::announce(CollectiveContext& ctx, const Call& mine) {
  control(me_)->call = mine;
  publish(kCalls, ++calls_);
  waitPeers(ctx, kCalls, calls_);
  std::vector<Call> all(size());
  for (int j = 0; j < size(); ++j)
    all[j] = control(j)->call;
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
  segments_.assign(P, nullptr);

  // 1. Make this rank's segment.
  Hello mine;
  const std::string name = segmentName();
  std::snprintf(mine.name, sizeof(mine.name), "%s", name.c_str());
  std::string problem;
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    problem = detail::concat("shm_open(", name, "): ", std::strerror(errno));
  } else {
    // fallocate, not ftruncate: a /dev/shm too small fails here, not as a
    // SIGBUS on the first write.
    const int rc = posix_fallocate(fd, 0, static_cast<off_t>(mappedBytes_));
    if (rc != 0) {
      problem = detail::concat("reserving ", mappedBytes_, " B in /dev/shm: ", std::strerror(rc));
    } else if (!(segments_[me_] = mapSegment(fd, mappedBytes_))) {
      problem = detail::concat("mmap: ", std::strerror(errno));
    }
    close(fd);
  }
  mine.ok = problem.empty();

  // 2. Learn the others' names; map them where everyone got this far.
  std::vector<Hello> hellos;
  try {
    hellos = exchange(ctx, 0, mine);
  } catch (...) {
    if (fd >= 0) shm_unlink(name.c_str());
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
      const int pfd = shm_open(peer.c_str(), O_RDWR, 0);
      struct stat st {};
      if (pfd < 0 || fstat(pfd, &st) != 0 || static_cast<size_t>(st.st_size) != mappedBytes_ ||
          !(segments_[j] = mapSegment(pfd, mappedBytes_))) {
        problem = detail::concat("mapping rank ", ctx.groupRank(j), "'s segment ", peer, ": ",
                                 pfd < 0 ? std::strerror(errno) : "wrong size or mmap failed");
        mapped.ok = 0;
      }
      if (pfd >= 0) close(pfd);
    }
  } else if (problem.empty()) {
    problem = "a peer could not make its segment";
  }

  // 3. Every peer has opened (or given up on) this rank's segment: unlink it.
  std::vector<Hello> acks;
  try {
    acks = exchange(ctx, 1, mapped);
  } catch (...) {
    if (fd >= 0) shm_unlink(name.c_str());
    throw;
  }
  if (fd >= 0) shm_unlink(name.c_str());
  bool usable = true;
  for (const auto& a : acks)
    usable = usable && a.ok;
  if (!usable) {
    unmapAll();
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
