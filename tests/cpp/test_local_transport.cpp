// The in-memory transport's two protocols: eager sends complete at once,
// rendezvous sends only when a receive matches them (and read the sender's
// buffer then), so a send-before-receive ordering bug shows as a Timeout.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>

#include "common/error.h"
#include "transport/local/local_transport.h"

namespace distx {
namespace {

constexpr uint64_t kAll = ~uint64_t{0};

Deadline in(std::chrono::milliseconds ms) {
  return Clock::now() + ms;
}

TEST(LocalTransport, EagerSendCompletesBeforeAnyReceive) {
  auto fabric = std::make_shared<LocalFabric>(2);
  auto t0 = fabric->transport(0), t1 = fabric->transport(1);
  int v = 7, got = 0;
  auto s = t0->send(1, 3, &v, sizeof v);
  EXPECT_TRUE(s->test());
  v = 8;  // eager copied the payload: the change is not seen
  auto r = t1->recv(0, 3, kAll, &got, sizeof got);
  t1->wait(*r, in(std::chrono::seconds(5)), "recv");
  EXPECT_EQ(got, 7);
}

TEST(LocalTransport, RendezvousSendCompletesOnlyWhenMatched) {
  auto fabric = std::make_shared<LocalFabric>(2, LocalProtocol::kRendezvous);
  auto t0 = fabric->transport(0), t1 = fabric->transport(1);
  int v = 7, got = 0;
  auto s = t0->send(1, 3, &v, sizeof v);
  EXPECT_FALSE(s->test());
  EXPECT_THROW(t0->wait(*s, in(std::chrono::milliseconds(50)), "send to rank 1"), Timeout);
  v = 8;  // not yet read: the receive copies from the sender's buffer when it matches
  auto r = t1->recv(0, 3, kAll, &got, sizeof got);
  EXPECT_TRUE(r->test());
  EXPECT_TRUE(s->test());
  EXPECT_EQ(got, 8);
  EXPECT_EQ(r->receivedBytes(), sizeof got);
  EXPECT_EQ(r->source(), 0);
}

TEST(LocalTransport, RendezvousSendToPostedReceiveCompletesAtOnce) {
  auto fabric = std::make_shared<LocalFabric>(2, LocalProtocol::kRendezvous);
  auto t0 = fabric->transport(0), t1 = fabric->transport(1);
  int v = 5, got = 0;
  auto r = t1->recv(-1, 9, kAll, &got, sizeof got);
  auto s = t0->send(1, 9, &v, sizeof v);
  EXPECT_TRUE(s->test());
  EXPECT_TRUE(r->test());
  EXPECT_EQ(got, 5);
}

// Both ranks send, wait for their send, then receive: fine when sends are
// buffered, a deadlock under rendezvous (which the deadline turns into Timeout).
TEST(LocalTransport, SendWaitThenReceiveDeadlocksOnlyUnderRendezvous) {
  for (auto protocol : {LocalProtocol::kEager, LocalProtocol::kRendezvous}) {
    auto fabric = std::make_shared<LocalFabric>(2, protocol);
    std::unique_ptr<LocalTransport> ts[2] = {fabric->transport(0), fabric->transport(1)};
    bool timedOut[2] = {false, false};
    std::thread threads[2];
    for (int r = 0; r < 2; ++r) {
      threads[r] = std::thread([&, r] {
        int mine = r, theirs = -1;
        try {
          auto s = ts[r]->send(1 - r, 1, &mine, sizeof mine);
          ts[r]->wait(*s, in(std::chrono::milliseconds(200)), "send");
          auto q = ts[r]->recv(1 - r, 1, kAll, &theirs, sizeof theirs);
          ts[r]->wait(*q, in(std::chrono::milliseconds(200)), "recv");
        } catch (const Timeout&) {
          timedOut[r] = true;
        }
      });
    }
    for (auto& t : threads)
      t.join();
    const bool rendezvous = protocol == LocalProtocol::kRendezvous;
    EXPECT_EQ(timedOut[0], rendezvous) << localProtocolName(protocol);
    EXPECT_EQ(timedOut[1], rendezvous) << localProtocolName(protocol);
  }
}

TEST(LocalTransport, DestroyedRendezvousSendIsWithdrawn) {
  auto fabric = std::make_shared<LocalFabric>(2, LocalProtocol::kRendezvous);
  auto t0 = fabric->transport(0), t1 = fabric->transport(1);
  int first = 1, second = 2, got = 0;
  { auto abandoned = t0->send(1, 4, &first, sizeof first); }  // its buffer may now be gone
  auto s = t0->send(1, 4, &second, sizeof second);
  auto r = t1->recv(0, 4, kAll, &got, sizeof got);
  t1->wait(*r, in(std::chrono::seconds(5)), "recv");
  EXPECT_EQ(got, 2);
  EXPECT_TRUE(s->test());
}

TEST(LocalTransport, RendezvousTruncationFailsTheReceive) {
  auto fabric = std::make_shared<LocalFabric>(2, LocalProtocol::kRendezvous);
  auto t0 = fabric->transport(0), t1 = fabric->transport(1);
  double big = 1.5;
  int small = 0;
  auto s = t0->send(1, 2, &big, sizeof big);
  auto r = t1->recv(0, 2, kAll, &small, sizeof small);
  EXPECT_THROW(t1->wait(*r, in(std::chrono::seconds(5)), "recv"), TransportError);
}

TEST(LocalTransport, RendezvousSendToKilledPeerFails) {
  auto fabric = std::make_shared<LocalFabric>(2, LocalProtocol::kRendezvous);
  auto t0 = fabric->transport(0);
  int v = 1;
  auto s = t0->send(1, 2, &v, sizeof v);
  fabric->kill(1);
  EXPECT_THROW(t0->wait(*s, in(std::chrono::seconds(5)), "send to rank 1"), PeerFailure);
}

}  // namespace
}  // namespace distx
