// POSIX shared-memory segments and futex-backed counters (shm_segment.h).
#include "transport/shm/shm_segment.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>
#include <utility>

#include "common/error.h"

namespace distx::shm {
namespace {

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
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

uint8_t* mapFd(int fd, size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
}

}  // namespace

Segment::~Segment() {
  if (data_) munmap(data_, bytes_);
}

Segment::Segment(Segment&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    if (data_) munmap(data_, bytes_);
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Segment Segment::create(const std::string& name, size_t bytes, std::string* problem) {
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    *problem = detail::concat("shm_open(", name, "): ", std::strerror(errno));
    return {};
  }
  uint8_t* data = nullptr;
  // fallocate, not ftruncate: a /dev/shm too small fails here, not as a
  // SIGBUS on the first write.
  const int rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  if (rc != 0) {
    *problem = detail::concat("reserving ", bytes, " B in /dev/shm: ", std::strerror(rc));
  } else if (!(data = mapFd(fd, bytes))) {
    *problem = detail::concat("mmap: ", std::strerror(errno));
  }
  close(fd);
  if (!data) {
    shm_unlink(name.c_str());
    return {};
  }
  return Segment(data, bytes);
}

Segment Segment::open(const std::string& name, size_t bytes, std::string* problem) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    *problem = detail::concat("segment ", name, ": ", std::strerror(errno));
    return {};
  }
  struct stat st {};
  uint8_t* data = nullptr;
  if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes ||
      !(data = mapFd(fd, bytes))) {
    *problem = detail::concat("segment ", name, ": wrong size or mmap failed");
  }
  close(fd);
  return data ? Segment(data, bytes) : Segment();
}

void Segment::unlink(const std::string& name) {
  shm_unlink(name.c_str());
}

std::string Segment::uniqueName() {
  static std::atomic<uint64_t> next{0};
  return detail::concat("/distx-", getpid(), "-", next.fetch_add(1));
}

void publish(ControlBlock& mine, int c, uint64_t value) {
  mine.counters[c].value.store(value, std::memory_order_release);
  // Note [Staging wake-ups]: the epoch bump and the sleepers load are
  // seq_cst, as are a sleeper's increment and epoch load: either the owner
  // sees the sleeper and wakes it, or the sleeper sees the new epoch (and the
  // counter) and does not sleep.
  mine.epoch.fetch_add(1, std::memory_order_seq_cst);
  if (mine.sleepers.load(std::memory_order_seq_cst) > 0) futexWakeAll(&mine.epoch);
}

void waitCounter(ControlBlock& peer, int c, uint64_t value, std::chrono::microseconds spin,
                 std::chrono::microseconds napCap, const std::function<void()>& check) {
  const auto& counter = peer.counters[c].value;
  if (counter.load(std::memory_order_acquire) >= value) return;
  const auto spinUntil = std::chrono::steady_clock::now() + spin;
  unsigned iter = 0;
  while (counter.load(std::memory_order_acquire) < value) {
    if (std::chrono::steady_clock::now() < spinUntil) {
      std::this_thread::yield();
      if ((++iter & 255) != 0) continue;
    } else {
      peer.sleepers.fetch_add(1, std::memory_order_seq_cst);
      const uint32_t seen = peer.epoch.load(std::memory_order_seq_cst);
      if (counter.load(std::memory_order_acquire) < value) futexWait(&peer.epoch, seen, napCap);
      peer.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
    check();
  }
}

}  // namespace distx::shm
