// ServerLoop: one thread that feeds a Shard from a Transport.
//
// It keeps one receive posted for any worker's message (tag kind kPs,
// direction kPsToShard, any source, any key) into a buffer of header + the
// shard's largest payload; a larger message fails the receive and is counted
// as kTooLarge. Replies are sent without waiting; their buffers stay owned
// until the send completes (or, for a peer that died, until the loop ends:
// Note [Parked buffers], a failed request's buffers stay owned). Worker deaths reported by another
// thread (workerDied) are applied between messages, at least every kPollMs.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ps/shard.h"
#include "transport/transport.h"

namespace distx::ps {

class ServerLoop {
 public:
  ServerLoop(Transport& transport, std::unique_ptr<Shard> shard);
  ~ServerLoop();
  ServerLoop(const ServerLoop&) = delete;
  ServerLoop& operator=(const ServerLoop&) = delete;

  void workerDied(int rank);  // any thread
  void stop();                // joins the thread
  // Blocks until every worker has closed or died, or stop()/a transport failure,
  // or `deadline`; returns false on the deadline.
  bool waitUntilIdle(Deadline deadline = Deadline::max());
  bool running() const { return !done_.load(); }
  std::string failure() const;  // why the loop ended early ("" if it did not)

  struct Stats {
    uint64_t applied = 0, rejected = 0;
    std::vector<uint64_t> rejectedBy;  // indexed by RejectReason
  };
  Stats stats() const;

 private:
  static constexpr int kPollMs = 20;
  void loop();
  void flush(std::vector<Outgoing>& out);
  void reapSends();

  Transport& transport_;
  std::unique_ptr<Shard> shard_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  mutable std::mutex mu_;  // guards deaths_, stats_, failure_
  std::vector<int> deaths_;
  Stats stats_;
  std::string failure_;
  struct Sending {
    RequestPtr req;
    std::vector<uint8_t> buf;
  };
  std::list<Sending> sending_;  // server thread only
  std::thread thread_;
};

}  // namespace distx::ps
