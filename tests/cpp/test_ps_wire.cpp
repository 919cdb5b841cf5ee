// PS wire format and shard validation: round trip, every rejection reason,
// compressed pushes (fp16/bf16/top-k, Note [PS compressed pushes]). The fuzz
// of the decoder + shard is in test_ps_fuzz.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ps_testing.h"

namespace distx::ps {
namespace {

TEST(PsWire, HeaderRoundTrips) {
  Header h = push(7, 3, 42, 5);
  h.op = Op::kReply;  // aux is the minimum clock here (a push's aux is its codec)
  h.aux = -9;
  std::vector<float> p = {1, 2, 3, 4, 5};
  auto buf = build(h, p.data(), p.size() * 4);
  ASSERT_EQ(buf.size(), kHeaderBytes + 20);
  Message m;
  ASSERT_EQ(decode(buf.data(), buf.size(), 1 << 20, m), RejectReason::kNone);
  EXPECT_EQ(m.header.key, 7u);
  EXPECT_EQ(m.header.worker, 3u);
  EXPECT_EQ(m.header.clock, 42);
  EXPECT_EQ(m.header.aux, -9);
  EXPECT_EQ(m.header.lr, 0.1);
  EXPECT_EQ(m.header.count, 5u);
  EXPECT_EQ(m.header.payloadBytes, 20u);
  EXPECT_EQ(std::memcmp(m.payload, p.data(), 20), 0);
}

// The names the shard's error replies and logs carry, pinned for every reason.
TEST(PsWire, EveryRejectReasonHasItsName) {
  const std::vector<std::pair<RejectReason, std::string>> names = {
      {RejectReason::kNone, "none"},
      {RejectReason::kTruncated, "truncated"},
      {RejectReason::kBadMagic, "bad magic"},
      {RejectReason::kBadVersion, "bad version"},
      {RejectReason::kBadOp, "bad op"},
      {RejectReason::kBadDType, "bad dtype"},
      {RejectReason::kBadLength, "bad length"},
      {RejectReason::kTooLarge, "too large"},
      {RejectReason::kBadLr, "bad lr"},
      {RejectReason::kUnknownKey, "unknown key"},
      {RejectReason::kCountMismatch, "count mismatch"},
      {RejectReason::kNotInGroup, "sender not in group"},
      {RejectReason::kSpoofedSender, "spoofed sender"},
      {RejectReason::kClockBackwards, "clock out of order"},
      {RejectReason::kNonFinite, "non-finite payload"},
      {RejectReason::kBadState, "bad state blob"},
      {RejectReason::kBadCodec, "bad codec"},
      {RejectReason::kBadIndex, "bad top-k index"},
      {RejectReason::kCount_, "?"},
  };
  for (const auto& [reason, name] : names)
    EXPECT_EQ(rejectReasonName(reason), name) << static_cast<int>(reason);
}

TEST(PsWire, DecoderRejectsStructuralDamage) {
  auto good = pushMsg(0, 0, 1, 4, 1.0f);
  Message m;
  auto expect = [&](std::vector<uint8_t> b, RejectReason r) {
    EXPECT_EQ(decode(b.data(), b.size(), 1 << 20, m), r) << rejectReasonName(r);
  };
  expect({}, RejectReason::kTruncated);
  expect(std::vector<uint8_t>(good.begin(), good.begin() + 10), RejectReason::kTruncated);
  expect(std::vector<uint8_t>(good.begin(), good.end() - 1), RejectReason::kTruncated);
  auto longer = good;
  longer.push_back(0);
  expect(longer, RejectReason::kBadLength);
  auto b = good;
  b[0] ^= 1;
  expect(b, RejectReason::kBadMagic);
  b = good;
  b[4] = 9;
  expect(b, RejectReason::kBadVersion);
  b = good;
  b[6] = 0;
  expect(b, RejectReason::kBadOp);
  b[6] = 200;
  expect(b, RejectReason::kBadOp);
  b = good;
  b[7] = static_cast<uint8_t>(DType::kFloat64);
  expect(b, RejectReason::kBadDType);
  b[7] = 250;
  expect(b, RejectReason::kBadDType);
  Header h = push(0, 0, 1, 5);  // count says 5, payload has 4 floats
  std::vector<float> p(4);
  auto bad = build(h, p.data(), 16);
  expect(bad, RejectReason::kBadLength);
  h = push(0, 0, 1, ~0ull / 2);  // count * 4 overflows
  bad = build(h, p.data(), 16);
  expect(bad, RejectReason::kBadLength);
  h = push(0, 0, 1, 4);
  h.lr = std::nan("");
  expect(build(h, p.data(), 16), RejectReason::kBadLr);
  h.lr = -1;
  expect(build(h, p.data(), 16), RejectReason::kBadLr);
  h = push(0, 0, -3, 4);
  expect(build(h, p.data(), 16), RejectReason::kClockBackwards);
  EXPECT_EQ(decode(good.data(), good.size(), 8, m), RejectReason::kTooLarge);
}

TEST(PsWire, DecoderChecksTheCodecOfAPush) {
  compression::TensorState st;
  const std::vector<float> x = {1, -2, 3, 0.5f};
  Message m;
  for (Codec c : {Codec::kNone, Codec::kFp16, Codec::kBf16, Codec::kTopK}) {
    auto b = codedPush(0, 0, 1, x, c, 0.5, st);
    EXPECT_EQ(decode(b.data(), b.size(), 1 << 20, m), RejectReason::kNone)
        << compression::methodName(c);
    EXPECT_EQ(m.header.aux, static_cast<int64_t>(c));
    b[24] = 4;  // aux: no codec 4
    EXPECT_EQ(decode(b.data(), b.size(), 1 << 20, m), RejectReason::kBadCodec);
    b[24] = 0xff;  // aux < 0
    for (int i = 25; i < 32; ++i)
      b[i] = 0xff;
    EXPECT_EQ(decode(b.data(), b.size(), 1 << 20, m), RejectReason::kBadCodec);
  }
  // The dtype must be the codec's payload type.
  auto b = codedPush(0, 0, 1, x, Codec::kFp16, 0.5, st);
  b[7] = static_cast<uint8_t>(DType::kBFloat16);
  EXPECT_EQ(decode(b.data(), b.size(), 1 << 20, m), RejectReason::kBadDType);
  b = codedPush(0, 0, 1, x, Codec::kTopK, 0.5, st);
  b[7] = static_cast<uint8_t>(DType::kFloat32);
  EXPECT_EQ(decode(b.data(), b.size(), 1 << 20, m), RejectReason::kBadDType);
  b = codedPush(0, 0, 1, x, Codec::kNone, 0.5, st);
  b[7] = static_cast<uint8_t>(DType::kFloat16);
  EXPECT_EQ(decode(b.data(), b.size(), 1 << 20, m), RejectReason::kBadDType);
}

// decodePush against the codecs' own decode (the reference the workers' side uses).
TEST(PsWire, CompressedPushesDecodeLikeTheCodec) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const size_t n = 1000;
  std::vector<float> x(n);
  for (auto& v : x)
    v = nd(rng);
  for (Codec c : {Codec::kFp16, Codec::kBf16, Codec::kTopK}) {
    compression::TensorState st;
    compression::CodecOptions o;
    o.ratio = 0.05;
    auto codec = compression::makeCodec(compression::methodName(c), o);
    auto msg = codedPush(0, 0, 1, x, c, 0.05, st);
    Message m;
    ASSERT_EQ(decode(msg.data(), msg.size(), 1 << 20, m), RejectReason::kNone);
    std::vector<float> got, ref(n);
    ASSERT_EQ(decodePush(m.header, m.payload, n, got), RejectReason::kNone);
    codec->decode(m.payload, 1, n, 1.0f, ref.data(), compression::serialParallel());
    EXPECT_EQ(got, ref) << compression::methodName(c);
    if (c == Codec::kTopK) {
      // Error feedback: what was sent plus the residual kept is the input, exactly.
      ASSERT_EQ(st.residual.size(), n);
      size_t sent = 0;
      for (size_t i = 0; i < n; ++i) {
        sent += got[i] != 0.0f;
        EXPECT_EQ(got[i] + st.residual[i], x[i]) << i;
        EXPECT_TRUE(got[i] == 0.0f || st.residual[i] == 0.0f);
      }
      EXPECT_EQ(sent, 50u);
    } else {
      for (size_t i = 0; i < n; ++i)
        EXPECT_NEAR(got[i], x[i], std::abs(x[i]) * (c == Codec::kFp16 ? 1e-3 : 8e-3));
    }
    std::vector<float> wrongSize;
    EXPECT_EQ(decodePush(m.header, m.payload, c == Codec::kTopK ? 49 : n + 1, wrongSize),
              RejectReason::kCountMismatch);
  }
}

TEST(PsShard, RejectsStatefulViolationsWithoutTouchingState) {
  ShardFixture f;
  const auto before0 = f.shard.params(0);
  EXPECT_EQ(f.send(1, pushMsg(1, 1, 1, 4, 1)), RejectReason::kUnknownKey);  // key on rank 3
  EXPECT_EQ(f.send(1, pushMsg(9, 1, 1, 4, 1)), RejectReason::kUnknownKey);  // no such key
  EXPECT_EQ(f.send(1, pushMsg(0, 1, 1, 3, 1)), RejectReason::kCountMismatch);
  EXPECT_EQ(f.send(1, pushMsg(0, 2, 1, 4, 1)), RejectReason::kSpoofedSender);
  EXPECT_EQ(f.send(3, pushMsg(0, 3, 1, 4, 1)), RejectReason::kNotInGroup);      // a server
  EXPECT_EQ(f.send(7, pushMsg(0, 7, 1, 4, 1)), RejectReason::kNotInGroup);      // beyond the world
  EXPECT_EQ(f.send(1, pushMsg(0, 1, 2, 4, 1)), RejectReason::kClockBackwards);  // skips 1
  EXPECT_EQ(f.send(1, pushMsg(0, 1, 1, 4, INFINITY)), RejectReason::kNonFinite);
  EXPECT_EQ(f.shard.params(0), before0);
  EXPECT_EQ(f.shard.applied(), 0u);
  EXPECT_EQ(f.shard.rejectedTotal(), 8u);
  EXPECT_EQ(f.shard.rejected(RejectReason::kUnknownKey), 2u);
  // Well-formed rejections from a worker get a kError reply; others none.
  size_t errors = 0;
  for (auto& o : f.out) {
    Message m;
    ASSERT_EQ(decode(o.bytes.data(), o.bytes.size(), 1 << 20, m), RejectReason::kNone);
    EXPECT_EQ(m.header.op, Op::kError);
    EXPECT_EQ(o.dst, 1);
    ++errors;
  }
  EXPECT_EQ(errors, 6u);
  // A good push applies; replaying it (clock going backwards) is rejected.
  f.out.clear();
  EXPECT_EQ(f.send(1, pushMsg(0, 1, 1, 4, 1)), RejectReason::kNone);
  EXPECT_EQ(f.shard.params(0)[0], 1.0f);
  EXPECT_EQ(f.send(1, pushMsg(0, 1, 1, 4, 1)), RejectReason::kClockBackwards);
  EXPECT_EQ(f.shard.params(0)[0], 1.0f);
  EXPECT_EQ(f.shard.applied(), 1u);
}

TEST(PsShard, RejectsMalformedCompressedPushesWithoutTouchingState) {
  ShardFixture f;
  const auto before0 = f.shard.params(0);
  compression::TensorState st;
  // Key 0 has 4 elements.
  EXPECT_EQ(f.send(1, topkPush(0, 1, 1, {{0, 1}, {4, 1}})), RejectReason::kBadIndex);  // >= n
  EXPECT_EQ(f.send(1, topkPush(0, 1, 1, {{-1, 1}})), RejectReason::kBadIndex);         // < 0
  EXPECT_EQ(f.send(1, topkPush(0, 1, 1, {{2, 1}, {1, 1}})), RejectReason::kBadIndex);  // order
  EXPECT_EQ(f.send(1, topkPush(0, 1, 1, {{1, 1}, {1, 1}})), RejectReason::kBadIndex);  // repeat
  EXPECT_EQ(f.send(1, topkPush(0, 1, 1, {{0, 1}, {1, 1}, {2, 1}, {3, 1}, {3, 1}})),
            RejectReason::kCountMismatch);  // k > n
  EXPECT_EQ(f.send(1, topkPush(0, 1, 1, {{1, NAN}})), RejectReason::kNonFinite);
  auto odd = topkPush(0, 1, 1, {{1, 1}});
  {  // 3 int32 words: the count says 3, the payload has 12 bytes
    Header h = push(0, 1, 1, 3);
    h.aux = static_cast<int64_t>(Codec::kTopK);
    h.dtype = DType::kInt32;
    int32_t w[3] = {1, 0, 2};
    odd = build(h, w, 12);
  }
  EXPECT_EQ(f.send(1, odd), RejectReason::kBadIndex);
  EXPECT_EQ(f.send(1, codedPush(0, 1, 1, {1, 2, 3}, Codec::kFp16, 1, st)),
            RejectReason::kCountMismatch);
  EXPECT_EQ(f.send(1, codedPush(0, 1, 1, {1, 2, 3, 70000}, Codec::kFp16, 1, st)),
            RejectReason::kNonFinite);  // overflows fp16 to inf
  EXPECT_EQ(f.shard.params(0), before0);
  EXPECT_EQ(f.shard.applied(), 0u);
  EXPECT_EQ(f.shard.rejected(RejectReason::kBadIndex), 5u);
  // A good top-k push applies exactly its pairs (mode delta: p += update).
  EXPECT_EQ(f.send(1, topkPush(0, 1, 1, {{1, 0.5f}, {3, -2}})), RejectReason::kNone);
  EXPECT_EQ(f.shard.params(0), (std::vector<float>{0, 1.5f, 2, 1}));
  EXPECT_EQ(f.send(2, codedPush(0, 2, 1, {0.25f, 0, 0, 1}, Codec::kBf16, 1, st)),
            RejectReason::kNone);
  EXPECT_EQ(f.shard.params(0), (std::vector<float>{0.25f, 1.5f, 2, 2}));
}

TEST(PsShard, SspAnswersPullOnlyWithinTheBound) {
  for (int s : {0, 1, 2}) {
    Layout layout{4, 4, {0}};
    Shard shard{layout, 0, {1, 2}, s, OptimizerConfig{}};
    std::vector<float> init(4, 0.0f);
    shard.init(init.data());
    std::vector<Outgoing> out;
    // Worker 1 runs ahead alone: its pull for clock c needs min clock >= c - s.
    for (int c = 1; c <= s + 2; ++c) {
      out.clear();
      auto m = pushMsg(0, 1, c, 4, 1);
      ASSERT_EQ(shard.handle(1, m.data(), m.size(), out), RejectReason::kNone);
      EXPECT_EQ(out.size(), c <= s ? 1u : 0u) << "s=" << s << " c=" << c;
    }
    // Worker 2 catching up releases worker 1's queued pulls in clock order.
    out.clear();
    auto m = pushMsg(0, 2, 1, 4, 1);
    ASSERT_EQ(shard.handle(2, m.data(), m.size(), out), RejectReason::kNone);
    for (auto& o : out) {
      Message r;
      ASSERT_EQ(decode(o.bytes.data(), o.bytes.size(), 1 << 20, r), RejectReason::kNone);
      EXPECT_GE(r.header.aux, r.header.clock - s);  // (clock, min clock) within the bound
    }
    // Dropping the slow worker releases everything queued.
    out.clear();
    auto m2 = pushMsg(0, 1, s + 3, 4, 1);
    ASSERT_EQ(shard.handle(1, m2.data(), m2.size(), out), RejectReason::kNone);
    const size_t before = out.size();
    shard.dropWorker(2, out);
    EXPECT_GT(out.size() + before, 0u);
    EXPECT_TRUE(shard.anyWorkerLive());
    out.clear();
    Header leave;
    leave.op = Op::kLeave;
    leave.worker = 1;
    auto lm = build(leave, nullptr, 0);
    ASSERT_EQ(shard.handle(1, lm.data(), lm.size(), out), RejectReason::kNone);
    EXPECT_FALSE(shard.anyWorkerLive());
  }
}

TEST(PsShard, StateBlobRoundTripsAndRejectsGarbage) {
  OptimizerConfig adam;
  adam.kind = OptimizerConfig::Kind::kAdam;
  Layout layout{6, 6, {0}};
  Shard a{layout, 0, {1}, 0, adam}, b{layout, 0, {1}, 0, adam};
  std::vector<float> init = {1, 2, 3, 4, 5, 6};
  a.init(init.data());
  b.init(init.data());
  std::vector<Outgoing> out;
  for (int c = 1; c <= 3; ++c) {
    auto m = pushMsg(0, 1, c, 6, 0.5f);
    ASSERT_EQ(a.handle(1, m.data(), m.size(), out), RejectReason::kNone);
  }
  auto blob = a.stateBlob(0);
  EXPECT_FALSE(b.loadStateBlob(0, blob.data(), blob.size() - 1));
  ASSERT_TRUE(b.loadStateBlob(0, blob.data(), blob.size()));
  EXPECT_EQ(b.params(0), a.params(0));
  auto m = pushMsg(0, 1, 4, 6, 0.25f);
  ASSERT_EQ(a.handle(1, m.data(), m.size(), out), RejectReason::kNone);
  ASSERT_EQ(b.handle(1, m.data(), m.size(), out), RejectReason::kNone);  // clock restored too
  EXPECT_EQ(b.params(0), a.params(0));
}

}  // namespace
}  // namespace distx::ps
