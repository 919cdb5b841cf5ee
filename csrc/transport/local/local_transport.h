// In-memory transport: P ranks as P threads of one process, for unit tests.
// A shared Fabric holds one mailbox per rank; send() copies the payload into
// the receiver's matching posted buffer or queues it as unexpected. Fault
// injection: Fabric::kill(rank) fails every wait involving that rank.
//
// Two protocols, as UCX has for small and large messages:
//  - kEager: an unmatched send copies its payload into the receiver's queue
//    and completes at once;
//  - kRendezvous: an unmatched send queues only a pointer to its buffer and
//    completes when a receive matches it, which then copies straight from the
//    sender's buffer. An algorithm that waits on a send before posting the
//    receive its peer needs deadlocks here (a Timeout), as it would under UCX
//    rendezvous; one that reuses a send buffer before wait() returns delivers
//    the wrong bytes. Destroying a pending send withdraws it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "transport/transport.h"

namespace distx {

class LocalFabric;

enum class LocalProtocol { kEager, kRendezvous };
const char* localProtocolName(LocalProtocol p);

class LocalTransport final : public Transport {
 public:
  LocalTransport(std::shared_ptr<LocalFabric> fabric, int rank);
  int rank() const override { return rank_; }
  int size() const override;
  RequestPtr send(int dst, uint64_t tag, const void* buf, size_t bytes) override;
  RequestPtr recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) override;
  void wait(Request& req, Deadline deadline, const std::string& what) override;
  void abort(const std::string& reason) override;
  void checkAlive(int peer, const std::string& what) override;
  std::string describe() const override { return "in-memory transport"; }
  // Payload bytes this rank has sent to `peer` (per-peer traffic accounting:
  // tests split a hierarchical algorithm's intra- and inter-node bytes).
  uint64_t bytesSentTo(int peer) const { return sentTo_[peer].load(std::memory_order_relaxed); }
  // Messages this rank has sent to `peer` (tests tell algorithms apart by it).
  uint64_t messagesSentTo(int peer) const {
    return messagesTo_[peer].load(std::memory_order_relaxed);
  }

 private:
  std::shared_ptr<LocalFabric> fabric_;
  int rank_;
  std::vector<std::atomic<uint64_t>> sentTo_;
  std::vector<std::atomic<uint64_t>> messagesTo_;
};

class LocalFabric : public std::enable_shared_from_this<LocalFabric> {
 public:
  explicit LocalFabric(int size, LocalProtocol protocol = LocalProtocol::kEager);
  int size() const { return static_cast<int>(boxes_.size()); }
  LocalProtocol protocol() const { return protocol_; }
  std::unique_ptr<LocalTransport> transport(int rank) {
    return std::make_unique<LocalTransport>(shared_from_this(), rank);
  }
  // Marks `rank` dead: waits on messages from or to it fail with PeerFailure.
  void kill(int rank);

  struct State;  // one posted or completed request (defined in the .cpp)
  // Withdraws an incomplete request whose owner destroyed it (a posted
  // receive in rank `box`'s mailbox, or a rendezvous send queued there).
  void cancel(const std::shared_ptr<State>& state, int box);
  std::mutex& mutexForRequests() { return mu_; }

 private:
  friend class LocalTransport;
  struct Message {
    uint64_t tag;
    int src;
    std::vector<uint8_t> payload;    // eager: a copy of the data
    std::shared_ptr<State> pending;  // rendezvous: the sender's request (buffer and size in it)
  };
  struct Box {
    std::list<std::shared_ptr<State>> posted;
    std::deque<Message> unexpected;
  };
  const LocalProtocol protocol_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Box> boxes_;
  std::vector<bool> dead_;
  std::vector<std::string> aborted_;  // per rank; non-empty = aborted
};

}  // namespace distx
