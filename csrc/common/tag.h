// Note [Tag layout]
// Every UCX/local message carries a 64-bit tag; receives match all 64 bits
// except where a p2p receive from any source clears the src field.
//
//   63..62  kind  (2)   0 = collective data, 1 = point-to-point, 2 = control
//   61..58  pg    (4)   low bits of the process-group id (each PG also has its own worker)
//   57..38  seq   (20)  per-PG collective sequence number (wraps; matching is ordered)
//   37..22  src   (16)  sender's rank in the group
//   21..0   slot  (22)  collective: step * chunks + chunk; p2p: unused
//
// For point-to-point the user tag takes the seq and slot fields (42 bits), so a
// user tag can never collide with collective traffic (different kind).
#pragma once

#include <cstdint>

namespace distx::tag {

enum class Kind : uint64_t { kCollective = 0, kP2P = 1, kControl = 2 };

constexpr int kSlotBits = 22;
constexpr int kSrcBits = 16;
constexpr int kSeqBits = 20;
constexpr int kPgBits = 4;
constexpr int kKindBits = 2;
static_assert(kSlotBits + kSrcBits + kSeqBits + kPgBits + kKindBits == 64, "tag must fill 64 bits");

constexpr int kSlotShift = 0;
constexpr int kSrcShift = kSlotShift + kSlotBits;
constexpr int kSeqShift = kSrcShift + kSrcBits;
constexpr int kPgShift = kSeqShift + kSeqBits;
constexpr int kKindShift = kPgShift + kPgBits;

constexpr uint64_t mask(int bits) {
  return bits == 64 ? ~0ull : ((1ull << bits) - 1);
}

constexpr uint64_t kSrcMask = mask(kSrcBits) << kSrcShift;
constexpr uint64_t kFullMask = ~0ull;
constexpr uint64_t kAnySourceMask = ~kSrcMask;
constexpr int kMaxRanks = 1 << kSrcBits;
constexpr uint64_t kMaxSlots = 1ull << kSlotBits;

constexpr uint64_t make(Kind kind, uint32_t pg, uint32_t seq, uint32_t src, uint64_t slot) {
  return (static_cast<uint64_t>(kind) << kKindShift) |
         ((static_cast<uint64_t>(pg) & mask(kPgBits)) << kPgShift) |
         ((static_cast<uint64_t>(seq) & mask(kSeqBits)) << kSeqShift) |
         ((static_cast<uint64_t>(src) & mask(kSrcBits)) << kSrcShift) |
         ((slot & mask(kSlotBits)) << kSlotShift);
}

// Point-to-point: the user's tag fills seq+slot.
constexpr uint64_t makeP2P(uint32_t pg, uint32_t src, uint64_t userTag) {
  constexpr int userBits = kSeqBits + kSlotBits;
  const uint64_t u = userTag & mask(userBits);
  return (static_cast<uint64_t>(Kind::kP2P) << kKindShift) |
         ((static_cast<uint64_t>(pg) & mask(kPgBits)) << kPgShift) |
         ((u >> kSlotBits) << kSeqShift) |
         ((static_cast<uint64_t>(src) & mask(kSrcBits)) << kSrcShift) | (u & mask(kSlotBits));
}

constexpr Kind kindOf(uint64_t t) {
  return static_cast<Kind>((t >> kKindShift) & mask(kKindBits));
}
constexpr uint32_t pgOf(uint64_t t) {
  return (t >> kPgShift) & mask(kPgBits);
}
constexpr uint32_t seqOf(uint64_t t) {
  return (t >> kSeqShift) & mask(kSeqBits);
}
constexpr uint32_t srcOf(uint64_t t) {
  return (t >> kSrcShift) & mask(kSrcBits);
}
constexpr uint64_t slotOf(uint64_t t) {
  return (t >> kSlotShift) & mask(kSlotBits);
}

static_assert(srcOf(make(Kind::kCollective, 3, 7, 12345, 99)) == 12345);
static_assert(seqOf(make(Kind::kCollective, 3, 7, 12345, 99)) == 7);
static_assert(slotOf(make(Kind::kCollective, 3, 7, 12345, 99)) == 99);
static_assert(kindOf(makeP2P(1, 2, 3)) == Kind::kP2P);

}  // namespace distx::tag
