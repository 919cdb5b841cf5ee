// The group's worker thread (Note [Execution model], process_group_distx.hpp):
// the queue the callers' threads fill, the loop that runs jobs in issue order,
// the conversion of a job's failure into the Work's DistBackendError, and
// parking what a failed job left to the transport (Note [Parked buffers]).
#include <c10/util/Exception.h>

#include <pthread.h>

#include "backend/op_checks.hpp"
#include "backend/process_group_distx.hpp"
#include "common/logging.h"

namespace distx {
namespace {

// How long the idle worker thread polls its queue before sleeping.
constexpr auto kWorkerPoll = std::chrono::microseconds(50);

std::chrono::milliseconds effectiveTimeout(std::chrono::milliseconds op,
                                           std::chrono::milliseconds group) {
  return op == c10d::kUnsetTimeout ? group : op;
}

}  // namespace

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::enqueue(c10d::OpType type, const char* opName,
                                                          std::chrono::milliseconds timeout,
                                                          std::vector<at::Tensor> outputs, Job job,
                                                          std::vector<at::Tensor> inputs) {
  std::unique_lock<std::mutex> lock(mu_);
  checkUsable(opName, stopping_);
  const uint64_t seq = ++seq_;
  auto work = c10::make_intrusive<WorkDistx>(rank_, type, seq, profilingTitle(opName),
                                             std::move(outputs), std::move(inputs));
  OpSignature sig = debugChecks_ ? makeSignature(type, opName, work->result()) : OpSignature{};
  queue_.push_back({work, std::move(job), static_cast<uint32_t>(seq), opName,
                    effectiveTimeout(timeout, timeout_.load()), sig});
  queued_.fetch_add(1, std::memory_order_acq_rel);
  lock.unlock();
  cv_.notify_one();
  return work;
}

void ProcessGroupDistx::workerLoop() {
  pthread_setname_np(pthread_self(), "distx-worker");
  struct Done {  // tells stopWorker() the loop has ended, however it ends
    ProcessGroupDistx* pg;
    ~Done() {
      {
        std::lock_guard<std::mutex> lock(pg->mu_);
        pg->workerDone_ = true;
      }
      pg->cv_.notify_all();
    }
  } done{this};
  for (;;) {
    // Back-to-back collectives (a training step) arrive within microseconds:
    // poll briefly before sleeping to skip a thread wake-up on the hot path.
    const auto until = Clock::now() + kWorkerPoll;
    while (queued_.load(std::memory_order_acquire) == 0 && Clock::now() < until) {
      std::this_thread::yield();
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    Queued q = std::move(queue_.front());
    queue_.pop_front();
    queued_.fetch_sub(1, std::memory_order_acq_rel);
    lock.unlock();
    run(q);
  }
}

void ProcessGroupDistx::run(Queued& q) {
  // Note [Parked buffers]: what failed jobs left to UCX is freed once it is done.
  if (!parked_.empty() && transport_->abandonedRequests() <= 0) parked_.clear();
  JobArena arena;
  JobArena::Scope scope(arena);
  CollectiveContext ctx{*transport_};
  ctx.pg = pgTag_;
  ctx.seq = q.seq;
  ctx.deadline = std::min(Clock::now() + q.timeout, Deadline(drainBy_.load()));
  // Note [Chunk size]: DISTX_CHUNK_BYTES, else by where the ranks are.
  ctx.localChunkBytes = chunkBytes_ ? chunkBytes_ : kLocalChunkBytes;
  ctx.chunkBytes =
      chunkBytes_ ? chunkBytes_ : (topology_.numNodes() <= 1 ? kLocalChunkBytes : kNetChunkBytes);
  ctx.railPieceBytes = pieceBytes_;  // Note [Pipelined split-rail]
  ctx.forcedAlgorithm = algorithm_;
  ctx.scratch = &scratch_;
  ctx.stageScratch = &stageScratch_;
  ctx.staging = &staging_;
  ctx.topology = &topology_;
  std::exception_ptr error;
  try {
    if (debugChecks_) checkConsistency(ctx, q.signature);
    q.job(ctx);
  } catch (const Timeout& e) {
    error = std::make_exception_ptr(c10::DistBackendError(
        {__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
        prefix(q.opName, q.seq) + " " + e.what() + " after " + std::to_string(q.timeout.count()) +
            " ms (the peer never joined this collective, is slow, or died)"));
  } catch (const Error& e) {
    error = std::make_exception_ptr(
        c10::DistBackendError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                              prefix(q.opName, q.seq) + " " + e.what()));
  } catch (const c10::Error&) {
    error = std::current_exception();
  } catch (const std::exception& e) {
    error = std::make_exception_ptr(
        c10::DistBackendError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                              prefix(q.opName, q.seq) + " " + e.what()));
  }
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      DISTX_LOG(LogLevel::kInfo, prefix(q.opName, q.seq), "failed: ", e.what());
    }
    if (transport_->abandonedRequests() > 0) {
      parked_.push_back(
          {std::move(q.job), std::move(arena), std::move(scratch_), std::move(stageScratch_)});
      scratch_ = {};
      stageScratch_.assign(tag::kMaxPhases, {});
    }
  }
  // The job's captures hold the caller's tensors: let go of them before the
  // caller can see the Work finish (Note [Shutdown at exit]).
  q.job = nullptr;
  WorkDistx::complete(q.work, error, *completions_);
}

void ProcessGroupDistx::stopWorker(bool drain, Deadline deadline) {
  std::deque<Queued> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (!drain) dropped.swap(queue_);
  }
  drainBy_.store(deadline);
  cv_.notify_all();
  for (auto& q : dropped) {
    WorkDistx::complete(q.work,
                        std::make_exception_ptr(c10::DistBackendError(
                            {__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                            prefix(q.opName, q.seq) + " aborted before it ran")),
                        *completions_);
  }
  if (drain) {  // Note [Bounded shutdown]
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return workerDone_; })) {
      lock.unlock();
      transport_->abort(detail::concat(prefix("shutdown", 0),
                                       " the process group was shut down "
                                       "with operations still pending"));
    }
  }
  if (worker_.joinable()) worker_.join();
  completions_.reset();  // runs what is queued, then joins
}

}  // namespace distx
