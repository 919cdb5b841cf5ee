// What the PS wire and fuzz tests share: pushes built as the Client builds
// them, and a shard on rank 0 holding keys 0 and 2 of a 3-key layout.
#pragma once

#include <cstring>
#include <vector>

#include "compression/codec.h"
#include "ps/shard.h"
#include "ps/wire.h"

namespace distx::ps {

inline Header push(uint32_t key, uint32_t worker, int64_t clock, uint64_t count) {
  Header h;
  h.op = Op::kPushPull;
  h.key = key;
  h.worker = worker;
  h.clock = clock;
  h.count = count;
  h.lr = 0.1;
  return h;
}

inline std::vector<uint8_t> pushMsg(uint32_t key, uint32_t worker, int64_t clock, size_t n,
                                    float v) {
  std::vector<float> p(n, v);
  return build(push(key, worker, clock, n), p.data(), n * sizeof(float));
}

// A push of `x` (n floats) encoded with `codec` as the Client does it.
inline std::vector<uint8_t> codedPush(uint32_t key, uint32_t worker, int64_t clock,
                                      const std::vector<float>& x, Codec codec, double ratio,
                                      compression::TensorState& state) {
  if (codec == Codec::kNone) {
    return build(push(key, worker, clock, x.size()), x.data(), x.size() * sizeof(float));
  }
  compression::CodecOptions o;
  o.ratio = ratio;
  auto c = compression::makeCodec(compression::methodName(codec), o);
  std::vector<uint8_t> payload(c->payloadBytes(x.size()));
  c->encode(x.data(), x.size(), 1.0f, state, payload.data(), compression::serialParallel());
  Header h = push(key, worker, clock, payload.size() / dtypeSize(codecDType(codec)));
  h.aux = static_cast<int64_t>(codec);
  h.dtype = codecDType(codec);
  return build(h, payload.data(), payload.size());
}

// A top-k push with the given (index, value) pairs, unchecked.
inline std::vector<uint8_t> topkPush(uint32_t key, uint32_t worker, int64_t clock,
                                     const std::vector<std::pair<int32_t, float>>& pairs) {
  std::vector<int32_t> words;
  for (auto [i, v] : pairs) {
    words.push_back(i);
    int32_t bits;
    std::memcpy(&bits, &v, 4);
    words.push_back(bits);
  }
  Header h = push(key, worker, clock, words.size());
  h.aux = static_cast<int64_t>(Codec::kTopK);
  h.dtype = DType::kInt32;
  return build(h, words.data(), words.size() * 4);
}

// Shard on rank 0 holding keys 0 and 2 of a 3-key layout; workers 1 and 2.
struct ShardFixture {
  Layout layout{10, 4, {0, 3}};  // keys 0 (4), 1 (4, rank 3), 2 (2)
  Shard shard{layout, 0, {1, 2}, 0, OptimizerConfig{}};
  std::vector<Outgoing> out;
  ShardFixture() {
    std::vector<float> init(10);
    for (int i = 0; i < 10; ++i)
      init[i] = static_cast<float>(i);
    shard.init(init.data());
  }
  RejectReason send(int src, const std::vector<uint8_t>& m) {
    return shard.handle(src, m.data(), m.size(), out);
  }
};

}  // namespace distx::ps
