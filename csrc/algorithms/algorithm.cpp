#include "algorithms/algorithm.h"

namespace distx {

uint8_t* CollectiveContext::scratchBytes(size_t bytes) {
  if (!scratch) return nullptr;
  if (scratch->size() < bytes) scratch->resize(bytes);
  return scratch->data();
}

CollectiveContext CollectiveContext::narrow(const std::vector<int>& ranks,
                                            uint32_t newPhase) const {
  DISTX_CHECK(newPhase >= 1 && newPhase < tag::kMaxPhases && newPhase != phase, InvalidArgument,
              "narrow: phase ", newPhase, " must be in 1..", tag::kMaxPhases - 1,
              " and differ from the parent's ", phase);
  CollectiveContext c = *this;  // pg, seq, deadline, chunkBytes, kind, stageScratch
  if (localChunkBytes && topology && !ranks.empty()) {  // Note [Chunk size]
    bool oneHost = true;
    for (int r : ranks)
      oneHost = oneHost && r >= 0 && r < size() &&
                topology->nodeOf(groupRank(r)) == topology->nodeOf(groupRank(ranks[0]));
    if (oneHost) c.chunkBytes = localChunkBytes;
  }
  c.topology = nullptr;  // the group's map does not describe the subset
  c.staging = nullptr;   // the group's, not the subset's
  c.members.clear();
  c.subRank = -1;
  c.scratch =
      stageScratch && stageScratch->size() > newPhase ? &(*stageScratch)[newPhase] : nullptr;
  c.phase = newPhase;
  const int me = rank();
  for (size_t i = 0; i < ranks.size(); ++i) {
    DISTX_CHECK(ranks[i] >= 0 && ranks[i] < size(), InvalidArgument, "narrow: rank ", ranks[i],
                " is outside 0..", size() - 1);
    if (ranks[i] == me) c.subRank = static_cast<int>(i);
    c.members.push_back(groupRank(ranks[i]));
  }
  DISTX_CHECK(c.subRank >= 0, InvalidArgument, "narrow: rank ", groupRank(me),
              " is not in the subset");
  return c;
}

void checkSlots(const CollectiveContext& ctx, uint64_t slots) {
  DISTX_CHECK(slots <= tag::kMaxSlots, InvalidArgument, "this collective needs ", slots,
              " message slots but a tag has room for ", tag::kMaxSlots, " (", ctx.chunkBytes,
              "-byte chunks, Note [Tag layout]); raise DISTX_CHUNK_BYTES or "
              "split the tensor");
}

}  // namespace distx
