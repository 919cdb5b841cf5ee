// A seeded fuzz of the PS decoder + shard (>= 100k random and mutated
// messages, raw and compressed) asserting that nothing rejected changes state.
// Runs under `make test-asan`.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "ps_testing.h"

namespace distx::ps {
namespace {

// Note [PS fuzz]: seeded, so a failure reproduces. Each input is either random
// bytes, or a valid message with random bytes flipped, truncated or extended,
// or a valid header with random field values. Whatever comes in, the shard
// must not crash or read out of bounds (ASan), and a rejected message must
// leave the parameters bit-identical.
TEST(PsFuzz, DecoderAndShardSurviveHostileInput) {
  ShardFixture f;
  std::mt19937_64 rng(20261201);
  auto u = [&](uint64_t n) { return n ? rng() % n : 0; };
  size_t accepted = 0, rejected = 0, acceptedCompressed = 0;
  int64_t known[3] = {0, 0, 0};  // worker 1's clock per key, as far as we know
  constexpr int kInputs = 120000;
  for (int i = 0; i < kInputs; ++i) {
    std::vector<uint8_t> msg;
    int src = static_cast<int>(u(5)) - 1;  // -1..3
    switch (u(6)) {
      case 4: {  // valid compressed push (fp16, bf16, top-k), mutated, truncated or extended
        const uint32_t k = u(2) ? 0 : 2;
        const size_t n = k == 0 ? 4 : 2;
        std::vector<float> x(n);
        for (auto& v : x)
          v = static_cast<float>(static_cast<int64_t>(u(64)) - 32) / 8;
        compression::TensorState st;
        msg = codedPush(k, 1, known[k] + 1, x, static_cast<Codec>(1 + u(3)), 0.5, st);
        switch (u(4)) {
          case 0:
            break;
          case 1:
            msg.resize(u(msg.size()));
            break;
          case 2:
            msg.resize(msg.size() + 1 + u(16), 0xAB);
            break;
          default:
            for (uint64_t j = 0, m = 1 + u(4); j < m; ++j)
              msg[u(msg.size())] ^= static_cast<uint8_t>(1u << u(8));
        }
        src = 1;
        break;
      }
      case 5: {  // compressed framing, random codec / dtype / words
        Header h;
        h.op = Op::kPushPull;
        h.aux = static_cast<int64_t>(u(6)) - 1;
        h.dtype = u(2) ? codecDType(static_cast<Codec>(u(4))) : static_cast<DType>(u(13));
        h.key = static_cast<uint32_t>(u(3));
        h.worker = 1;
        h.clock = known[h.key % 3] + static_cast<int64_t>(u(3));
        h.lr = 0.01;
        const size_t words = u(12);
        std::vector<int32_t> w(words);
        for (auto& v : w)
          v = u(3) ? static_cast<int32_t>(u(6)) - 1 : static_cast<int32_t>(rng());
        const size_t es = dtypeSize(h.dtype);
        h.count = u(8) == 0 ? u(1ull << 62) : words * 4 / (es ? es : 1);  // dtype 12: invalid
        msg = build(h, w.data(), words * 4);
        src = 1;
        break;
      }
      case 0: {  // random bytes
        msg.resize(u(128));
        for (auto& b : msg)
          b = static_cast<uint8_t>(rng());
        break;
      }
      case 1: {  // valid push, mutated bytes
        {
          const uint32_t k = u(2) ? 0 : 2;
          msg = pushMsg(k, 1, known[k] + 1, k == 0 ? 4 : 2, 0.5f);
        }
        for (uint64_t k = 0, n = 1 + u(4); k < n; ++k)
          msg[u(msg.size())] ^= static_cast<uint8_t>(1u << u(8));
        src = 1;
        break;
      }
      case 2: {  // valid push, truncated or extended
        msg = pushMsg(0, 1, known[0] + 1, 4, 0.5f);
        if (u(2))
          msg.resize(u(msg.size()));
        else
          msg.resize(msg.size() + 1 + u(16), 0xAB);
        src = 1;
        break;
      }
      default: {  // valid framing, random field values
        Header h;
        h.op = static_cast<Op>(u(12));
        if (h.op == Op::kLeave) h.op = Op::kPull;  // leaving is legal; tested elsewhere
        h.dtype = static_cast<DType>(u(13));
        h.key = static_cast<uint32_t>(u(4));
        h.worker = static_cast<uint32_t>(u(4));
        h.clock = static_cast<int64_t>(u(6)) - 1;
        h.lr = u(8) == 0 ? -1.0 : 0.01;
        const size_t n = u(6);
        h.count = u(8) == 0 ? u(1ull << 62) : n;
        std::vector<float> p(n, u(16) == 0 ? NAN : 0.125f);
        msg = build(h, p.data(), n * sizeof(float));
        break;
      }
    }
    const auto p0 = f.shard.params(0), p2 = f.shard.params(2);
    const uint64_t applied = f.shard.applied();
    const RejectReason r = f.shard.handle(src, msg.data(), msg.size(), f.out);
    if (f.out.size() > 64) f.out.clear();
    if (r == RejectReason::kNone) {
      ++accepted;
      Message m;
      if (f.shard.applied() > applied &&
          decode(msg.data(), msg.size(), 1 << 20, m) == RejectReason::kNone && m.header.key < 3) {
        known[m.header.key] = m.header.clock;
        acceptedCompressed += m.header.aux != 0;
      }
    } else {
      ++rejected;
      ASSERT_EQ(f.shard.params(0), p0) << "input " << i;
      ASSERT_EQ(f.shard.params(2), p2) << "input " << i;
      ASSERT_EQ(f.shard.applied(), applied) << "input " << i;
    }
  }
  EXPECT_EQ(accepted + rejected, static_cast<size_t>(kInputs));
  EXPECT_EQ(f.shard.rejectedTotal(), rejected);
  EXPECT_GT(rejected, kInputs / 2);
  EXPECT_GT(accepted, 0u);
  EXPECT_GT(acceptedCompressed, 0u);
}

}  // namespace
}  // namespace distx::ps
