// Parameter server end to end over the in-memory transport, ranks as threads:
// convergence on a convex problem for s in {0, 2, -1}, s = 0 equal to
// synchronous SGD on the summed update, server-side optimizers against a
// reference, the SSP bound on every reply, dead workers and dead shards.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "common/tag.h"
#include "ps/node.h"
#include "transport/local/local_transport.h"

namespace distx::ps {
namespace {

using std::chrono::milliseconds;

// Worker w minimises 0.5*|x - a_w|^2; the sum's optimum is mean(a_w).
float target(int w, size_t i) {
  return static_cast<float>(w + 1) * 0.5f + static_cast<float>(i % 7) * 0.25f;
}

struct World {
  int P;
  std::shared_ptr<LocalFabric> fabric;
  std::vector<std::unique_ptr<LocalTransport>> transports;
  explicit World(int p) : P(p), fabric(std::make_shared<LocalFabric>(p)) {
    for (int r = 0; r < P; ++r)
      transports.push_back(fabric->transport(r));
  }
  // One Node per rank, every one starting from `init`.
  std::vector<std::unique_ptr<Node>> nodes(const NodeConfig& cfg, const std::vector<float>& init) {
    std::vector<std::unique_ptr<Node>> out;
    for (int r = 0; r < P; ++r)
      out.push_back(std::make_unique<Node>(*transports[r], cfg, init.data(), nullptr));
    return out;
  }
};

NodeConfig config(int P, int servers, int s, size_t total, size_t chunk) {
  NodeConfig c;
  for (int r = 0; r < P - servers; ++r)
    c.workers.push_back(r);
  if (servers == 0) {
    c.servers = c.workers;
  } else {
    for (int r = P - servers; r < P; ++r)
      c.servers.push_back(r);
  }
  c.staleness = s;
  c.total = total;
  c.chunkElems = chunk;
  c.timeout = milliseconds(20000);
  return c;
}

// Runs `steps` delta-mode SGD steps on every worker; returns the final params per worker.
std::vector<std::vector<float>> trainDelta(
    int P, int servers, int s, int steps, float lr, size_t n, size_t chunk,
    std::vector<std::vector<std::vector<float>>>* trace = nullptr,
    std::vector<std::vector<std::pair<int64_t, int64_t>>>* logs = nullptr, float decay = 1.0f,
    bool sameTarget = false, Codec codec = Codec::kNone, double ratio = 0.01) {
  World world(P);
  NodeConfig cfg = config(P, servers, s, n, chunk);
  cfg.compression = codec;
  cfg.topkRatio = ratio;
  std::vector<float> init(n, 0.0f);
  auto nodes = world.nodes(cfg, init);
  const int W = static_cast<int>(cfg.workers.size());
  std::vector<std::vector<float>> out(W);
  if (trace) trace->assign(W, {});
  if (logs) logs->assign(W, {});
  std::vector<std::thread> threads;
  std::atomic<int> finished{0};
  for (int w = 0; w < W; ++w) {
    threads.emplace_back([&, w] {
      Client& c = nodes[w]->client();
      std::vector<float> x = init, delta(n);  // every rank starts from the same init
      float lrT = lr;
      for (int t = 0; t < steps; ++t, lrT *= decay) {
        // Uneven pace so staleness matters.
        if ((t + w) % 3 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200 * w));
        for (size_t i = 0; i < n; ++i)
          delta[i] = -lrT * (x[i] - target(sameTarget ? 0 : w, i));
        c.pushPull(delta.data(), 0.0);
        c.wait(x.data());
        if (trace) (*trace)[w].push_back(x);
      }
      if (logs) (*logs)[w] = c.replyLog();
      // Once every worker is done, a pull sees every update (any s).
      ++finished;
      while (finished.load() < W)
        std::this_thread::yield();
      c.pull();
      c.wait(x.data());
      out[w] = x;
      nodes[w]->close();
    });
  }
  for (auto& t : threads)
    t.join();
  for (auto& nd : nodes)
    nd->close();
  return out;
}

TEST(PsNode, ConvexProblemConvergesForEveryStaleness) {
  const size_t n = 37;
  for (int s : {0, 2, -1}) {
    for (int servers : {0, 1}) {
      const int P = 4;
      const int W = P - servers;
      // A decaying lr: with a constant one, whichever worker finishes last pulls the
      // parameters towards its own optimum for its last (up to s+1) steps. Async
      // (s = -1) weighs a faster worker's loss more (and unboundedly so), so there
      // every worker gets the same loss: the optimum no longer depends on the pace.
      const bool same = s < 0;
      auto xs = trainDelta(P, servers, s, 150, 0.05f, n, 8, nullptr, nullptr, 0.98f, same);
      for (int w = 0; w < W; ++w) {
        for (size_t i = 0; i < n; ++i) {
          float opt = 0;
          for (int v = 0; v < W; ++v)
            opt += target(same ? 0 : v, i);
          opt /= W;
          EXPECT_NEAR(xs[w][i], opt, s == 0 ? 5e-3 : 2e-2)
              << "s=" << s << " servers=" << servers << " w=" << w;
        }
      }
    }
  }
}

// Note [PS compressed pushes]: every codec still converges (top-k thanks to the
// worker-side error feedback: what a push leaves out is pushed later).
TEST(PsNode, ConvexProblemConvergesWithCompressedPushes) {
  const size_t n = 37;
  for (Codec codec : {Codec::kFp16, Codec::kBf16, Codec::kTopK}) {
    for (int servers : {0, 1}) {
      const int P = 4, W = P - servers;
      auto xs =
          trainDelta(P, servers, 2, 200, 0.05f, n, 8, nullptr, nullptr, 0.98f, false, codec, 0.25);
      for (int w = 0; w < W; ++w) {
        for (size_t i = 0; i < n; ++i) {
          float opt = 0;
          for (int v = 0; v < W; ++v)
            opt += target(v, i);
          opt /= W;
          EXPECT_NEAR(xs[w][i], opt, 2e-2) << compression::methodName(codec)
                                           << " servers=" << servers << " w=" << w << " i=" << i;
        }
      }
    }
  }
}

TEST(PsNode, SynchronousEqualsSgdOnTheSummedUpdate) {
  const int P = 3, steps = 20;
  const size_t n = 11;
  const float lr = 0.05f;
  std::vector<std::vector<std::vector<float>>> trace;
  trainDelta(P, 0, 0, steps, lr, n, 4, &trace);
  std::vector<float> x(n, 0.0f);
  for (int t = 0; t < steps; ++t) {
    std::vector<float> next = x;
    for (int w = 0; w < P; ++w)
      for (size_t i = 0; i < n; ++i)
        next[i] += -lr * (x[i] - target(w, i));
    x = next;
    for (int w = 0; w < P; ++w)
      for (size_t i = 0; i < n; ++i)
        ASSERT_NEAR(trace[w][t][i], x[i], 1e-5) << "step " << t << " worker " << w << " i " << i;
  }
}

TEST(PsNode, EveryReplyHonoursTheStalenessBound) {
  for (int s : {0, 1, 3}) {
    std::vector<std::vector<std::pair<int64_t, int64_t>>> logs;
    trainDelta(4, 0, s, 40, 0.05f, 9, 3, nullptr, &logs);
    size_t replies = 0;
    for (auto& log : logs) {
      for (auto [clock, minClock] : log) {
        EXPECT_LE(clock - minClock, s) << "s=" << s;
        ++replies;
      }
    }
    EXPECT_EQ(replies, 4u * 40u * 3u);  // 40 steps x 3 chunks per worker
  }
}

// Server-side SGD (momentum, nesterov, weight decay) and Adam/AdamW in
// server mode with s = 0 against the same update computed here.
TEST(PsNode, ServerOptimizersMatchTheReference) {
  struct Case {
    OptimizerConfig::Kind kind;
    double momentum, wd;
    bool nesterov;
  };
  for (Case cs : {Case{OptimizerConfig::Kind::kSgd, 0.9, 0.01, false},
                  Case{OptimizerConfig::Kind::kSgd, 0.9, 0.0, true},
                  Case{OptimizerConfig::Kind::kSgd, 0.0, 0.1, false},
                  Case{OptimizerConfig::Kind::kAdam, 0, 0.01, false},
                  Case{OptimizerConfig::Kind::kAdamW, 0, 0.01, false}}) {
    const int P = 2, steps = 15;
    const size_t n = 10;
    World world(P);
    NodeConfig cfg = config(P, 0, 0, n, 4);
    cfg.optimizer.kind = cs.kind;
    cfg.optimizer.momentum = cs.momentum;
    cfg.optimizer.weightDecay = cs.wd;
    cfg.optimizer.nesterov = cs.nesterov;
    std::vector<float> init(n, 1.0f);
    auto nodes = world.nodes(cfg, init);
    std::vector<std::vector<float>> finals(P);
    std::vector<std::thread> threads;
    for (int w = 0; w < P; ++w) {
      threads.emplace_back([&, w] {
        std::vector<float> x = init, g(n);
        for (int t = 0; t < steps; ++t) {
          for (size_t i = 0; i < n; ++i)
            g[i] = x[i] - target(w, i);
          nodes[w]->client().pushPull(g.data(), 0.01 * (1 + t % 3));  // lr travels with the push
          nodes[w]->client().wait(x.data());
        }
        finals[w] = x;
        nodes[w]->close();
      });
    }
    for (auto& t : threads)
      t.join();
    // Reference: one optimizer step per round on the summed gradient.
    OptimizerState st;
    std::vector<float> x(n, 1.0f), g(n);
    for (int t = 0; t < steps; ++t) {
      for (size_t i = 0; i < n; ++i) {
        g[i] = 0;
        for (int w = 0; w < P; ++w)
          g[i] += x[i] - target(w, i);
      }
      applyUpdate(cfg.optimizer, st, x.data(), g.data(), n, 0.01 * (1 + t % 3));
    }
    for (int w = 0; w < P; ++w)
      for (size_t i = 0; i < n; ++i)
        EXPECT_NEAR(finals[w][i], x[i], 1e-5) << "kind " << static_cast<int>(cs.kind);
    // And the reference itself against torch's SGD formula for the first case (by hand).
  }
}

TEST(PsNode, DeadWorkerIsDroppedAndTheOthersGoOn) {
  const int P = 4;  // workers 0..2, dedicated server 3
  const size_t n = 16;
  World world(P);
  const NodeConfig cfg = config(P, 1, 0, n, 8);
  std::vector<float> init(n, 0.0f);
  auto nodes = world.nodes(cfg, init);
  std::atomic<int> stepsDone{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      std::vector<float> x(n), d(n, 0.01f);
      for (int t = 0; t < 30; ++t) {
        nodes[w]->client().pushPull(d.data(), 0);
        nodes[w]->client().wait(x.data());  // s = 0: blocks on worker 2 until it is dropped
        ++stepsDone;
      }
      nodes[w]->close();
    });
  }
  // Worker 2 pushes once, then "dies".
  std::vector<float> x(n), d(n, 0.01f);
  nodes[2]->client().pushPull(d.data(), 0);
  nodes[2]->client().wait(x.data());
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_LE(stepsDone.load(), 2);  // the others wait for it at s = 0
  world.fabric->kill(2);
  nodes[3]->peerDied(2, "test kill");
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(stepsDone.load(), 60);
  nodes[3]->close();
}

TEST(PsNode, DeadShardFailsEveryWorkerNamingIt) {
  const int P = 3;  // workers 0, 1; server 2
  const size_t n = 8;
  World world(P);
  const NodeConfig cfg = config(P, 1, 0, n, 8);
  std::vector<float> init(n, 0.0f);
  auto nodes = world.nodes(cfg, init);
  std::vector<float> x(n), d(n, 0.5f);
  nodes[0]->client().pushPull(d.data(), 0);  // blocks at s = 0 (worker 1 never pushes)
  world.fabric->kill(2);
  nodes[0]->peerDied(2, "test kill");
  nodes[1]->peerDied(2, "test kill");
  try {
    nodes[0]->client().wait(x.data());
    FAIL() << "wait on a dead shard returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shard on rank 2"), std::string::npos) << e.what();
  }
  try {
    nodes[1]->client().pushPull(d.data(), 0);
    nodes[1]->client().wait(x.data());
    FAIL() << "wait on a dead shard returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shard on rank 2"), std::string::npos) << e.what();
  }
}

TEST(PsNode, MalformedPushesAreRejectedCountedAndNeverApplied) {
  const int P = 3;
  const size_t n = 8;
  World world(P);
  const NodeConfig cfg = config(P, 0, -1, n, 8);  // one key, on rank 0
  std::vector<float> init(n, 3.0f);
  auto nodes = world.nodes(cfg, init);
  // Rank 2 sends garbage, a wrong-length push, a spoofed one and an oversized one.
  auto& t2 = *world.transports[2];
  std::vector<uint8_t> garbage(100, 0xEE);
  Header h;
  h.op = Op::kPushPull;
  h.key = 0;
  h.worker = 2;
  h.clock = 1;
  h.count = 4;  // payload of 4 floats announced, 5 sent
  std::vector<float> p(5, 1e6f);
  auto wrongLen = build(h, p.data(), 16);
  wrongLen.resize(wrongLen.size() + 4);
  h.worker = 1;  // pretends to be rank 1
  h.count = 8;
  std::vector<float> p8(8, 1e6f);
  auto spoofed = build(h, p8.data(), 32);
  std::vector<uint8_t> huge(kHeaderBytes + (1 << 16), 0);
  for (auto* m : {&garbage, &wrongLen, &spoofed, &huge}) {
    auto r = t2.send(0, tag::makePs(tag::kPsToShard, 2, 0), m->data(), m->size());
    t2.wait(*r, Clock::now() + milliseconds(5000), "test send");
  }
  for (int i = 0; i < 500 && nodes[0]->server()->stats().rejected < 4; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  auto st = nodes[0]->server()->stats();
  EXPECT_EQ(st.rejected, 4u);
  EXPECT_EQ(st.applied, 0u);
  EXPECT_EQ(st.rejectedBy[static_cast<size_t>(RejectReason::kBadMagic)], 1u);
  EXPECT_EQ(st.rejectedBy[static_cast<size_t>(RejectReason::kBadLength)], 1u);
  EXPECT_EQ(st.rejectedBy[static_cast<size_t>(RejectReason::kSpoofedSender)], 1u);
  EXPECT_EQ(st.rejectedBy[static_cast<size_t>(RejectReason::kTooLarge)], 1u);
  // The legitimate worker sees untouched parameters and can still push.
  std::vector<float> x(n), d(n, 1.0f);
  auto& c = nodes[1]->client();
  c.pull();
  c.wait(x.data());
  EXPECT_EQ(x, init);
  c.pushPull(d.data(), 0);
  c.wait(x.data());
  EXPECT_EQ(x, std::vector<float>(n, 4.0f));
  for (auto& nd : nodes)
    nd->client().close();
  nodes[0]->close();
}

}  // namespace
}  // namespace distx::ps
