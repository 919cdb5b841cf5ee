// Note [Tag layout]
// Every UCX/local message carries a 64-bit tag; receives match all 64 bits
// except where a p2p receive from any source clears the src field.
//
//   63..62  kind  (2)   0 = collective data, 1 = point-to-point, 2 = control,
//                       3 = parameter server (csrc/ps)
//   61..52  pg    (10)  the group's id, unique among the live groups of every
//                       member process (all groups share one UCX worker, Note
//                       [Shared UCX runtime]; ids are agreed at creation)
//   51..41  seq   (11)  per-PG collective sequence number (wraps; matching is
//                       ordered per sender and tag, so a wrapped seq can only
//                       meet its namesake 2048 collectives later)
//   40..38  phase (3)   stage of a hierarchical collective (0 = the flat, whole-group
//                       context; 1..7 = a narrowed context, Note [Narrowed context])
//   37..22  src   (16)  sender's rank in the group (always the group rank, also
//                       inside a narrowed context)
//   21..0   slot  (22)  collective: step * chunks + chunk; p2p: unused
//
// Two stages of one collective never share a phase, so their messages between
// the same pair of ranks (same src, same slot) cannot match each other's
// receives. For point-to-point the user tag takes the seq, phase and slot
// fields (36 bits), so a user tag can never collide with collective traffic
// (different kind).
// Parameter-server traffic (makePs) uses seq = direction (1 to a shard, 2 to a
// worker), phase 0 and slot = key.
#pragma once

#include <cstdint>

namespace distx::tag {

enum class Kind : uint64_t { kCollective = 0, kP2P = 1, kControl = 2, kPs = 3 };

constexpr int kSlotBits = 22;
constexpr int kSrcBits = 16;
constexpr int kPhaseBits = 3;
constexpr int kSeqBits = 11;
constexpr int kPgBits = 10;
constexpr int kKindBits = 2;
static_assert(kSlotBits + kSrcBits + kPhaseBits + kSeqBits + kPgBits + kKindBits == 64,
              "tag must fill 64 bits");

constexpr int kSlotShift = 0;
constexpr int kSrcShift = kSlotShift + kSlotBits;
constexpr int kPhaseShift = kSrcShift + kSrcBits;
constexpr int kSeqShift = kPhaseShift + kPhaseBits;
constexpr int kPgShift = kSeqShift + kSeqBits;
constexpr int kKindShift = kPgShift + kPgBits;
static_assert(kKindShift + kKindBits == 64, "kind must be the top field");
static_assert(kSeqShift == kPhaseShift + kPhaseBits, "p2p user tags need phase+seq contiguous");

constexpr uint64_t mask(int bits) {
  return bits == 64 ? ~0ull : ((1ull << bits) - 1);
}

constexpr uint64_t kSrcMask = mask(kSrcBits) << kSrcShift;
constexpr uint64_t kFullMask = ~0ull;
constexpr uint64_t kAnySourceMask = ~kSrcMask;
constexpr int kMaxRanks = 1 << kSrcBits;
constexpr uint64_t kMaxSlots = 1ull << kSlotBits;
constexpr uint32_t kMaxPhases = 1u << kPhaseBits;  // phase 0 is the flat context
constexpr uint32_t kMaxGroups = 1u << kPgBits;     // live groups per process

constexpr uint64_t make(Kind kind, uint32_t pg, uint32_t seq, uint32_t phase, uint32_t src,
                        uint64_t slot) {
  return (static_cast<uint64_t>(kind) << kKindShift) |
         ((static_cast<uint64_t>(pg) & mask(kPgBits)) << kPgShift) |
         ((static_cast<uint64_t>(seq) & mask(kSeqBits)) << kSeqShift) |
         ((static_cast<uint64_t>(phase) & mask(kPhaseBits)) << kPhaseShift) |
         ((static_cast<uint64_t>(src) & mask(kSrcBits)) << kSrcShift) |
         ((slot & mask(kSlotBits)) << kSlotShift);
}

// Flat (phase 0) form.
constexpr uint64_t make(Kind kind, uint32_t pg, uint32_t seq, uint32_t src, uint64_t slot) {
  return make(kind, pg, seq, 0, src, slot);
}

// Point-to-point: the user's tag fills phase+seq (high part) and slot (low part).
constexpr uint64_t makeP2P(uint32_t pg, uint32_t src, uint64_t userTag) {
  constexpr int userBits = kSeqBits + kPhaseBits + kSlotBits;
  const uint64_t u = userTag & mask(userBits);
  return (static_cast<uint64_t>(Kind::kP2P) << kKindShift) |
         ((static_cast<uint64_t>(pg) & mask(kPgBits)) << kPgShift) |
         ((u >> kSlotBits) << kPhaseShift) |
         ((static_cast<uint64_t>(src) & mask(kSrcBits)) << kSrcShift) | (u & mask(kSlotBits));
}

// Parameter server: toShard picks the direction, key the chunk.
constexpr uint32_t kPsToShard = 1;
constexpr uint32_t kPsToWorker = 2;
constexpr uint64_t makePs(uint32_t direction, uint32_t src, uint64_t key) {
  return make(Kind::kPs, 0, direction, src, key);
}
// A shard receives from any worker, any key: match kind and direction only.
constexpr uint64_t kPsShardMask = (mask(kKindBits) << kKindShift) | (mask(kSeqBits) << kSeqShift);

constexpr Kind kindOf(uint64_t t) {
  return static_cast<Kind>((t >> kKindShift) & mask(kKindBits));
}
constexpr uint32_t pgOf(uint64_t t) {
  return (t >> kPgShift) & mask(kPgBits);
}
constexpr uint32_t seqOf(uint64_t t) {
  return (t >> kSeqShift) & mask(kSeqBits);
}
constexpr uint32_t phaseOf(uint64_t t) {
  return (t >> kPhaseShift) & mask(kPhaseBits);
}
constexpr uint32_t srcOf(uint64_t t) {
  return (t >> kSrcShift) & mask(kSrcBits);
}
constexpr uint64_t slotOf(uint64_t t) {
  return (t >> kSlotShift) & mask(kSlotBits);
}
// The user tag a p2p message was sent with (inverse of makeP2P).
constexpr uint64_t userTagOf(uint64_t t) {
  return (((t >> kPhaseShift) & mask(kSeqBits + kPhaseBits)) << kSlotBits) | slotOf(t);
}

static_assert(srcOf(make(Kind::kCollective, 3, 7, 12345, 99)) == 12345);
static_assert(seqOf(make(Kind::kCollective, 3, 7, 12345, 99)) == 7);
static_assert(slotOf(make(Kind::kCollective, 3, 7, 12345, 99)) == 99);
static_assert(phaseOf(make(Kind::kCollective, 3, 7, 12345, 99)) == 0);
static_assert(phaseOf(make(Kind::kCollective, 3, 7, 5, 12345, 99)) == 5);
static_assert(seqOf(make(Kind::kCollective, 3, 7, 5, 12345, 99)) == 7);
static_assert(srcOf(make(Kind::kCollective, 3, 7, 5, 12345, 99)) == 12345);
static_assert(make(Kind::kCollective, 0, 0, 1, 0, 0) != make(Kind::kCollective, 0, 0, 2, 0, 0));
static_assert(kindOf(makeP2P(1, 2, 3)) == Kind::kP2P);
static_assert(userTagOf(makeP2P(1, 2, (1ull << 36) - 1)) == (1ull << 36) - 1);
static_assert(userTagOf(makeP2P(1, 2, 0xaaaaaaaaaull)) == 0xaaaaaaaaaull);
static_assert(kSeqBits + kPhaseBits + kSlotBits >= 32, "a p2p user tag (int) must fit");
static_assert(kindOf(makePs(kPsToShard, 5, 7)) == Kind::kPs);
static_assert((makePs(kPsToShard, 5, 7) & kPsShardMask) ==
              (makePs(kPsToShard, 0, 0) & kPsShardMask));

}  // namespace distx::tag
