// Note [Point-to-point]
// send/recv must never wait on the process group's worker thread: with
// batch_isend_irecv both ranks issue irecv before isend, and a worker blocked
// on the receive would never reach the send. So a p2p op is posted to the
// transport at once, on the caller's thread (the UCX worker is multi-thread
// safe), and its Work completes asynchronously: an op that finishes at once
// (an eager send, a message already waiting) completes inline; the others go
// to this engine, whose one thread polls their requests, backing off to short
// sleeps when nothing moves.
// Tags come from tag::makeP2P(pg, src, userTag), a kind of its own, so p2p
// traffic never matches a collective's; recv from any source masks the src
// field and reads the sender from the matched tag (Work::sourceRank()).
// Every op has a deadline (the group's timeout). A dead peer (the transport
// was aborted), shutdown() or the engine's destruction fails every pending
// op's Work instead of leaving it hanging. The buffers of a failed op stay
// alive until the engine goes, since the transport may still use them.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/completion_pool.hpp"
#include "backend/work.hpp"
#include "transport/transport.h"

namespace distx {

class P2PEngine {
 public:
  // `stopping` tells whether the process group is shutting down; `prefix` is
  // the "[distx rank r/P pg name" head of error messages.
  P2PEngine(Transport& transport, uint32_t pgTag, std::function<bool()> stopping,
            std::string prefix);
  ~P2PEngine();  // stop("the process group was destroyed"), then joins
  P2PEngine(const P2PEngine&) = delete;
  P2PEngine& operator=(const P2PEngine&) = delete;

  // Post now; the Work completes when the transfer has. src < 0: any source.
  c10::intrusive_ptr<c10d::Work> send(const at::Tensor& t, int dst, int userTag,
                                      std::chrono::milliseconds timeout);
  c10::intrusive_ptr<c10d::Work> recv(const at::Tensor& t, int src, int userTag,
                                      std::chrono::milliseconds timeout);

  // Fails every pending op now with "<why> while the operation was pending"
  // (the first reason given wins). Later posts still go through post()'s
  // stopping check.
  void stop(const std::string& why);

 private:
  struct Op;
  c10::intrusive_ptr<c10d::Work> post(std::unique_ptr<Op> op);
  void loop();
  // Completes op's Work (with `error` if set); takes ownership of op.
  void finish(std::unique_ptr<Op> op, std::exception_ptr error);
  std::exception_ptr errorFor(const Op& op, const std::string& what) const;

  Transport& transport_;
  const uint32_t pgTag_;
  const std::function<bool()> stopping_;
  const std::string prefix_;
  CompletionPool completions_;  // Note [Completion threads]

  std::mutex mu_;
  std::condition_variable cv_;
  std::list<std::unique_ptr<Op>> pending_;   // guarded by mu_
  std::vector<std::unique_ptr<Op>> failed_;  // guarded by mu_; see the note
  bool stop_ = false;                        // guarded by mu_
  std::string stopWhy_;                      // guarded by mu_
  std::thread thread_;                       // started by the first pending op
};

}  // namespace distx
