// Shared memory between the processes of one host: POSIX segments and the
// progress counters that ranks publish and wait on inside them. The mechanism
// behind shared staging (Note [Shared staging], algorithms/shared_staging.h);
// the block schedules that use it stay in algorithms/.
//
// A segment starts with a ControlBlock (one 4 KiB page) its owner writes:
// counters that only grow, a small payload the owner posts before bumping a
// counter, and the futex word of Note [Staging wake-ups]. A waiter spins
// (yielding) for a short while, then sleeps on the owner's futex until the
// owner publishes, waking at least every `napCap` to run its `check` (the
// caller's deadline and liveness test, which throws to end the wait).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace distx::shm {

// The owner-written head of a segment.
struct ControlBlock {
  static constexpr int kCounters = 4;
  static constexpr size_t kPayloadBytes = 64;
  struct alignas(64) Line {
    std::atomic<uint64_t> value;
  };
  Line counters[kCounters];
  alignas(64) uint8_t payload[kPayloadBytes];  // written before the counter that announces it
  // Note [Staging wake-ups]: bumped by the owner after every publish; peers
  // sleep on it (futex) and count themselves in `sleepers` meanwhile.
  alignas(64) std::atomic<uint32_t> epoch;
  alignas(64) std::atomic<uint32_t> sleepers;
};
constexpr size_t kControlBytes = 4096;
static_assert(sizeof(ControlBlock) <= kControlBytes, "the control block outgrew its page");

// One mapping of a POSIX shared-memory segment; unmapped on destruction.
class Segment {
 public:
  Segment() = default;
  ~Segment();
  Segment(Segment&& o) noexcept;
  Segment& operator=(Segment&& o) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Creates `name` (exclusively) with `bytes` reserved in /dev/shm and maps
  // it. On failure returns an empty segment and says why in `problem`; a
  // name it created is unlinked again.
  static Segment create(const std::string& name, size_t bytes, std::string* problem);
  // Maps the existing segment `name`, which must hold exactly `bytes`.
  static Segment open(const std::string& name, size_t bytes, std::string* problem);
  // Removes `name` from /dev/shm (mappings stay valid).
  static void unlink(const std::string& name);
  // A name no other segment of this process has used ("/distx-<pid>-<n>").
  static std::string uniqueName();

  bool valid() const { return data_ != nullptr; }
  uint8_t* data() const { return data_; }
  ControlBlock* control() const { return reinterpret_cast<ControlBlock*>(data_); }

 private:
  Segment(uint8_t* data, size_t bytes) : data_(data), bytes_(bytes) {}
  uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
};

// Stores `value` in the owner's counter `c` and wakes its sleepers.
void publish(ControlBlock& mine, int c, uint64_t value);

// Waits until `peer`'s counter `c` is >= value: spins (yielding) for `spin`,
// then sleeps on the peer's futex, at most `napCap` at a time. `check` runs
// between rounds and throws to give up.
void waitCounter(ControlBlock& peer, int c, uint64_t value, std::chrono::microseconds spin,
                 std::chrono::microseconds napCap, const std::function<void()>& check);

}  // namespace distx::shm
