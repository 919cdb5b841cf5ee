// The transport interface: tagged, non-blocking point-to-point messages between
// the ranks of one process group. Algorithms only ever see this file.
//
// Semantics (both implementations honour them, tests rely on them):
//  - send() may complete before the receiver posts its recv; the buffer must
//    stay valid until wait() returns.
//  - Messages from one sender that match the same receive are matched in the
//    order they were sent (UCX tag matching gives this per sender).
//  - A recv matches when (msgTag & mask) == (tag & mask); a message larger than
//    the posted buffer is an error (TransportError), a smaller one is fine.
//  - wait() is bounded by a deadline and throws Timeout, PeerFailure or
//    TransportError; it never hangs past the deadline.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/bootstrap.h"
#include "common/clock.h"

namespace distx {

// One outstanding send or receive. Owned by the caller; destroying an
// incomplete request cancels it (the transport keeps any state it still needs).
class Request {
 public:
  virtual ~Request() = default;
  // Non-blocking: true once complete. Throws if the request failed.
  virtual bool test() = 0;
  // For receives, after completion: bytes received and the sender's rank.
  virtual size_t receivedBytes() const = 0;
  virtual int source() const = 0;
};
using RequestPtr = std::unique_ptr<Request>;

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  virtual RequestPtr send(int dst, uint64_t tag, const void* buf, size_t bytes) = 0;
  // src < 0 means any source (the caller passes a mask without the src bits).
  virtual RequestPtr recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) = 0;

  // Blocks until `req` completes or `deadline` passes. `what` names the wait in
  // errors ("recv from rank 3").
  virtual void wait(Request& req, Deadline deadline, const std::string& what) = 0;

  // Fails every current and future wait with `reason` (abort/shutdown/peer death).
  virtual void abort(const std::string& reason) = 0;

  // Throws what wait() would for a failed peer or an aborted transport, for
  // waits that do not go through a request (Note [Shared staging]).
  virtual void checkAlive(int peer, const std::string& what) = 0;

  // What a process group needs of the transport behind it, beyond messages:
  //  - groupId(): the group's tag id (Note [Tag layout]), the same on every
  //    member; 0 where the transport serves one group only (tests).
  //  - abandonedRequests(): requests whose owner gave up on them (a failed
  //    collective) that the transport may still read or write: their buffers
  //    must stay valid (Note [Parked buffers]). 0 where a destroyed request
  //    never touches its buffer again.
  //  - shutdown(): releases the group's resources (its id); later sends and
  //    receives fail. Safe to call twice.
  //  - cudaMemory(): send/recv take CUDA device pointers (Note [CUDA-aware
  //    rail]); false where only host memory may be passed.
  //  - describe(): what carries the messages, for the group's first log line.
  virtual uint32_t groupId() const { return 0; }
  virtual int abandonedRequests() const { return 0; }
  virtual void shutdown() {}
  virtual bool cudaMemory() const { return false; }
  virtual std::string describe() const = 0;

  // Payload bytes this rank has handed to send() (traffic accounting in tests
  // and benchmarks).
  uint64_t bytesSent() const { return bytesSent_.load(std::memory_order_relaxed); }

 protected:
  void countSent(size_t bytes) { bytesSent_.fetch_add(bytes, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> bytesSent_{0};
};

}  // namespace distx
