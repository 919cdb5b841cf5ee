#include "ps/shard.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "compression/cast.h"
#include "compression/topk.h"

namespace distx::ps {

RejectReason decodePush(const Header& h, const uint8_t* payload, size_t n,
                        std::vector<float>& dense) {
  const Codec codec = static_cast<Codec>(h.aux);  // range-checked by decode()
  const auto& serial = compression::serialParallel();
  switch (codec) {
    case Codec::kNone:
      if (h.count != n) return RejectReason::kCountMismatch;
      dense.resize(n);
      if (n) std::memcpy(dense.data(), payload, n * sizeof(float));
      return RejectReason::kNone;
    case Codec::kFp16:
    case Codec::kBf16:
      if (h.count != n) return RejectReason::kCountMismatch;
      dense.resize(n);
      compression::castKernels(codec).decode(reinterpret_cast<const uint16_t*>(payload),
                                             dense.data(), n, 1.0f, serial);
      return RejectReason::kNone;
    case Codec::kTopK: {
      if (h.count % 2 != 0) return RejectReason::kBadIndex;
      const size_t k = h.count / 2;
      if (k > n) return RejectReason::kCountMismatch;
      // The payload may be unaligned inside the message: read the words by memcpy.
      std::vector<int32_t> pairs(h.count);
      if (h.count) std::memcpy(pairs.data(), payload, h.count * sizeof(int32_t));
      int64_t prev = -1;
      for (size_t j = 0; j < k; ++j) {
        const int64_t idx = pairs[2 * j];
        if (idx <= prev || idx >= static_cast<int64_t>(n)) return RejectReason::kBadIndex;
        prev = idx;
      }
      dense.resize(n);
      compression::decodeTopK(pairs.data(), k, n, 1.0f, dense.data(), /*accumulate=*/false, serial);
      return RejectReason::kNone;
    }
  }
  return RejectReason::kBadCodec;
}

Shard::Shard(const Layout& layout, int rank, std::vector<int> workers, int staleness,
             OptimizerConfig opt)
    : layout_(layout), rank_(rank), workers_(std::move(workers)), staleness_(staleness), opt_(opt) {
  int maxRank = rank_;
  for (int w : workers_) {
    DISTX_CHECK(w >= 0, InvalidArgument, "ps: negative worker rank ", w);
    maxRank = std::max(maxRank, w);
  }
  slotOf_.assign(maxRank + 1, -1);
  for (size_t i = 0; i < workers_.size(); ++i)
    slotOf_[workers_[i]] = static_cast<int>(i);
  live_.assign(workers_.size(), true);
  open_.assign(workers_.size(), true);
  for (uint32_t k : layout_.keysOf(rank_)) {
    KeyState& ks = keys_[k];
    ks.params.assign(layout_.count(k), 0.0f);
    ks.clock.assign(workers_.size(), 0);
    keyList_.push_back(k);
    // A top-k push of k = n pairs is 8n bytes (Note [PS compressed pushes]).
    maxPayload_ = std::max({maxPayload_, blobBytes(ks), ks.params.size() * 2 * sizeof(int32_t)});
  }
}

void Shard::init(const float* flat) {
  for (auto& [k, ks] : keys_)
    std::memcpy(ks.params.data(), flat + layout_.offset(k), ks.params.size() * sizeof(float));
}

size_t Shard::blobBytes(const KeyState& k) const {
  return k.params.size() * sizeof(float) * (1 + opt_.slots()) +
         sizeof(int64_t) * (1 + workers_.size());
}

int64_t Shard::minLive(const KeyState& ks) const {
  int64_t m = std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < ks.clock.size(); ++i)
    if (live_[i]) m = std::min(m, ks.clock[i]);
  return m;
}

int64_t Shard::minClock(uint32_t key) const {
  return minLive(keys_.at(key));
}

bool Shard::anyWorkerLive() const {
  return std::find(live_.begin(), live_.end(), true) != live_.end();
}

bool Shard::anyWorkerOpen() const {
  return std::find(open_.begin(), open_.end(), true) != open_.end();
}

uint64_t Shard::rejectedTotal() const {
  uint64_t t = 0;
  for (size_t i = 1; i < rejected_.size(); ++i)
    t += rejected_[i];
  return t;
}

void Shard::reply(uint32_t key, KeyState& ks, int worker, int64_t clock,
                  std::vector<Outgoing>& out) {
  Header h;
  h.op = Op::kReply;
  h.key = key;
  h.worker = static_cast<uint32_t>(rank_);
  h.clock = clock;
  const int64_t m = minLive(ks);
  h.aux = m == std::numeric_limits<int64_t>::max() ? clock : m;
  h.count = ks.params.size();
  out.push_back({worker, build(h, ks.params.data(), ks.params.size() * sizeof(float))});
}

void Shard::closeRound(KeyState& ks) {
  if (ks.roundClock == 0 || minLive(ks) < ks.roundClock) return;
  applyUpdate(opt_, ks.opt, ks.params.data(), ks.roundSum.data(), ks.roundSum.size(), ks.roundLr);
  ks.roundClock = 0;
}

void Shard::releasePending(uint32_t key, KeyState& ks, std::vector<Outgoing>& out) {
  closeRound(ks);
  if (ks.pending.empty()) return;
  const int64_t m = minLive(ks);
  auto keep = ks.pending.begin();
  for (auto it = ks.pending.begin(); it != ks.pending.end(); ++it) {
    const int slot = slotOf_[it->worker];
    if (!live_[slot]) continue;  // its worker is gone: nobody to answer
    if (staleness_ < 0 || m >= it->clock - staleness_) {
      reply(key, ks, it->worker, it->clock, out);
    } else {
      *keep++ = *it;
    }
  }
  ks.pending.erase(keep, ks.pending.end());
}

void Shard::error(int dst, const Header& h, RejectReason r, std::vector<Outgoing>& out) {
  Header e;
  e.op = Op::kError;
  e.key = h.key;
  e.worker = static_cast<uint32_t>(rank_);
  e.clock = h.clock;
  e.aux = static_cast<int64_t>(r);
  out.push_back({dst, build(e, nullptr, 0)});
}

RejectReason Shard::handle(int src, const uint8_t* data, size_t bytes, std::vector<Outgoing>& out) {
  Message msg;
  RejectReason r = decode(data, bytes, maxPayload_, msg);
  if (r != RejectReason::kNone) {
    countReject(r);
    return r;
  }
  const Header& h = msg.header;
  const bool fromWorker = src >= 0 && src < static_cast<int>(slotOf_.size()) && slotOf_[src] >= 0;
  const int slot = fromWorker ? slotOf_[src] : -1;
  auto fail = [&](RejectReason why) {
    countReject(why);
    if (fromWorker && open_[slot]) error(src, h, why, out);
    return why;
  };
  if (static_cast<int64_t>(h.worker) != src) return fail(RejectReason::kSpoofedSender);
  if (!fromWorker || !open_[slot]) return fail(RejectReason::kNotInGroup);
  // A worker that left may only read state or close.
  if (!live_[slot] && h.op != Op::kGetState && h.op != Op::kClose && h.op != Op::kLeave)
    return fail(RejectReason::kNotInGroup);
  if (h.op == Op::kLeave || h.op == Op::kClose) {
    leaveWorker(src, out);
    if (h.op == Op::kClose) open_[slot] = false;
    return RejectReason::kNone;
  }
  auto it = keys_.find(h.key);
  if (it == keys_.end()) return fail(RejectReason::kUnknownKey);
  KeyState& ks = it->second;
  switch (h.op) {
    case Op::kPushPull: {
      if (h.clock != ks.clock[slot] + 1) return fail(RejectReason::kClockBackwards);
      std::vector<float> g;
      const RejectReason dr = decodePush(h, msg.payload, ks.params.size(), g);
      if (dr != RejectReason::kNone) return fail(dr);
      for (float v : g)
        if (!std::isfinite(v)) return fail(RejectReason::kNonFinite);
      if (aggregates()) {
        if (ks.roundClock != h.clock) {
          ks.roundSum.assign(g.size(), 0.0f);
          ks.roundClock = h.clock;
        }
        for (size_t i = 0; i < g.size(); ++i)
          ks.roundSum[i] += g[i];
        ks.roundLr = h.lr;
      } else {
        applyUpdate(opt_, ks.opt, ks.params.data(), g.data(), g.size(), h.lr);
      }
      ++applied_;
      ks.clock[slot] = h.clock;
      ks.pending.push_back({src, h.clock});
      releasePending(h.key, ks, out);
      return RejectReason::kNone;
    }
    case Op::kPull:
      if (h.clock > ks.clock[slot]) return fail(RejectReason::kClockBackwards);
      ks.pending.push_back({src, h.clock});
      releasePending(h.key, ks, out);
      return RejectReason::kNone;
    case Op::kGetState: {
      Header s;
      s.op = Op::kState;
      s.dtype = DType::kUInt8;
      s.key = h.key;
      s.worker = static_cast<uint32_t>(rank_);
      const auto blob = stateBlob(h.key);
      s.count = blob.size();
      out.push_back({src, build(s, blob.data(), blob.size())});
      return RejectReason::kNone;
    }
    case Op::kSetState: {
      if (!loadStateBlob(h.key, msg.payload, h.payloadBytes)) return fail(RejectReason::kBadState);
      Header a;
      a.op = Op::kAck;
      a.key = h.key;
      a.worker = static_cast<uint32_t>(rank_);
      out.push_back({src, build(a, nullptr, 0)});
      return RejectReason::kNone;
    }
    default:  // replies, errors, acks are never sent to a shard
      return fail(RejectReason::kBadOp);
  }
}

void Shard::dropWorker(int rank, std::vector<Outgoing>& out) {
  if (rank < 0 || rank >= static_cast<int>(slotOf_.size()) || slotOf_[rank] < 0) return;
  open_[slotOf_[rank]] = false;
  leaveWorker(rank, out);
}

void Shard::leaveWorker(int rank, std::vector<Outgoing>& out) {
  if (!live_[slotOf_[rank]]) return;
  live_[slotOf_[rank]] = false;
  for (auto& [k, ks] : keys_)
    releasePending(k, ks, out);
}

std::vector<uint8_t> Shard::stateBlob(uint32_t key) const {
  const KeyState& ks = keys_.at(key);
  std::vector<uint8_t> blob(blobBytes(ks));
  uint8_t* p = blob.data();
  const size_t n = ks.params.size() * sizeof(float);
  std::memcpy(p, ks.params.data(), n);
  p += n;
  const std::vector<float>* slots[2] = {&ks.opt.slot0, &ks.opt.slot1};
  for (int s = 0; s < opt_.slots(); ++s) {
    if (slots[s]->size() * sizeof(float) == n)
      std::memcpy(p, slots[s]->data(), n);
    else
      std::memset(p, 0, n);  // not yet created: zeros, as the optimizer would start
    p += n;
  }
  std::memcpy(p, &ks.opt.step, sizeof(int64_t));
  p += sizeof(int64_t);
  std::memcpy(p, ks.clock.data(), ks.clock.size() * sizeof(int64_t));
  return blob;
}

bool Shard::loadStateBlob(uint32_t key, const uint8_t* data, size_t bytes) {
  KeyState& ks = keys_.at(key);
  if (bytes != blobBytes(ks)) return false;
  const size_t n = ks.params.size() * sizeof(float);
  const uint8_t* p = data + n * (1 + opt_.slots());
  int64_t step;
  std::memcpy(&step, p, sizeof(step));
  std::vector<int64_t> clock(ks.clock.size());
  std::memcpy(clock.data(), p + sizeof(int64_t), clock.size() * sizeof(int64_t));
  if (step < 0) return false;
  for (int64_t c : clock)
    if (c < 0) return false;
  std::vector<float> params(ks.params.size());
  std::memcpy(params.data(), data, n);
  for (float v : params)
    if (!std::isfinite(v)) return false;
  ks.params = std::move(params);
  std::vector<float>* slots[2] = {&ks.opt.slot0, &ks.opt.slot1};
  for (int s = 0; s < opt_.slots(); ++s) {
    slots[s]->resize(ks.params.size());
    std::memcpy(slots[s]->data(), data + n * (1 + s), n);
  }
  ks.opt.step = step;
  ks.clock = std::move(clock);
  ks.pending.clear();
  ks.roundClock = 0;
  return true;
}

}  // namespace distx::ps
