// P2PEngine (Note [Point-to-point]) and the send / recv / recvAnysource
// overrides that post through it.
#include "backend/p2p.hpp"

#include <pthread.h>

#include <c10/util/Exception.h>

#include "backend/op_checks.hpp"
#include "backend/process_group_distx.hpp"
#include "common/tag.h"

namespace distx {
namespace {

// The poll loop spins (yielding) this many rounds after progress, then sleeps
// kIdleSleep between rounds: p2p latency stays low while a burst is moving,
// and an op that waits long costs no CPU.
constexpr int kSpinRounds = 200;
constexpr auto kIdleSleep = std::chrono::microseconds(200);
// How often the loop checks for shutdown and for an aborted transport.
constexpr auto kLivenessCheck = std::chrono::milliseconds(20);

}  // namespace

struct P2PEngine::Op {
  c10d::OpType type;
  int peer;  // -1: any source
  int userTag;
  at::Tensor user;  // the caller's tensor
  at::Tensor buf;   // contiguous: user itself, or a staging copy
  RequestPtr req;
  c10::intrusive_ptr<WorkDistx> work;
  Deadline deadline;
  std::chrono::milliseconds timeout;

  bool isRecv() const { return type != c10d::OpType::SEND; }
  std::string describe() const {
    const char* verb = type == c10d::OpType::SEND ? "send to" : "recv from";
    return peer < 0 ? detail::concat("recv from any source (tag ", userTag, ")")
                    : detail::concat(verb, " rank ", peer, " (tag ", userTag, ")");
  }
};

P2PEngine::P2PEngine(Transport& transport, uint32_t pgTag, std::function<bool()> stopping,
                     std::string prefix)
    : transport_(transport),
      pgTag_(pgTag),
      stopping_(std::move(stopping)),
      prefix_(std::move(prefix)) {}

P2PEngine::~P2PEngine() {
  stop("the process group was destroyed");
  if (thread_.joinable()) thread_.join();
}

void P2PEngine::stop(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    stopWhy_ = why;
  }
  cv_.notify_all();
}

std::exception_ptr P2PEngine::errorFor(const Op& op, const std::string& what) const {
  const char* name = op.type == c10d::OpType::SEND ? "send" : "recv";
  return std::make_exception_ptr(
      c10::DistBackendError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                            detail::concat(prefix_, " ", name, "] ", op.describe(), ": ", what)));
}

c10::intrusive_ptr<c10d::Work> P2PEngine::send(const at::Tensor& t, int dst, int userTag,
                                               std::chrono::milliseconds timeout) {
  auto op = std::make_unique<Op>();
  op->type = c10d::OpType::SEND;
  op->peer = dst;
  op->userTag = userTag;
  op->user = t;
  op->buf = t.contiguous();
  op->timeout = timeout;
  op->work = c10::make_intrusive<WorkDistx>(transport_.rank(), op->type, 0, profilingTitle("send"),
                                            std::vector<at::Tensor>{t});
  try {
    op->req = transport_.send(dst, tag::makeP2P(pgTag_, transport_.rank(), userTag),
                              op->buf.data_ptr(), op->buf.nbytes());
  } catch (const Error& e) {
    C10_THROW_ERROR(DistBackendError,
                    detail::concat(prefix_, " send] ", op->describe(), ": ", e.what()));
  }
  return post(std::move(op));
}

c10::intrusive_ptr<c10d::Work> P2PEngine::recv(const at::Tensor& t, int src, int userTag,
                                               std::chrono::milliseconds timeout) {
  auto op = std::make_unique<Op>();
  op->type = src < 0 ? c10d::OpType::RECVANYSOURCE : c10d::OpType::RECV;
  op->peer = src;
  op->userTag = userTag;
  op->user = t;
  op->buf = t.is_contiguous()
                ? t
                : at::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
  op->timeout = timeout;
  op->work = c10::make_intrusive<WorkDistx>(transport_.rank(), op->type, 0,
                                            profilingTitle(src < 0 ? "recvAnySource" : "recv"),
                                            std::vector<at::Tensor>{t});
  try {
    if (src < 0) {
      op->req = transport_.recv(-1, tag::makeP2P(pgTag_, 0, userTag), tag::kAnySourceMask,
                                op->buf.data_ptr(), op->buf.nbytes());
    } else {
      op->req = transport_.recv(src, tag::makeP2P(pgTag_, src, userTag), tag::kFullMask,
                                op->buf.data_ptr(), op->buf.nbytes());
    }
  } catch (const Error& e) {
    C10_THROW_ERROR(DistBackendError,
                    detail::concat(prefix_, " recv] ", op->describe(), ": ", e.what()));
  }
  return post(std::move(op));
}

c10::intrusive_ptr<c10d::Work> P2PEngine::post(std::unique_ptr<Op> op) {
  c10::intrusive_ptr<c10d::Work> work = op->work;
  op->deadline = Clock::now() + op->timeout;
  bool done = false;
  std::exception_ptr error;
  try {
    done = op->req->test();
  } catch (const std::exception& e) {
    done = true;
    error = errorFor(*op, e.what());
  }
  if (done) {  // finished at once: complete on the caller's thread
    finish(std::move(op), error);
    return work;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    TORCH_CHECK(!stop_, prefix_, " p2p] ", stopWhy_);
    pending_.push_back(std::move(op));
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }
  cv_.notify_one();
  return work;
}

void P2PEngine::finish(std::unique_ptr<Op> op, std::exception_ptr error) {
  if (!error && op->isRecv()) {
    const size_t got = op->req->receivedBytes(), want = op->buf.nbytes();
    op->work->setSourceRank(op->peer >= 0 ? op->peer : op->req->source());
    if (got != want) {
      error = errorFor(*op, detail::concat("rank ", op->req->source(), " sent ", got,
                                           " bytes but the receiving tensor holds ", want));
    } else if (!op->buf.is_same(op->user)) {
      op->user.copy_(op->buf);
    }
  }
  auto work = op->work;
  if (error) {
    std::lock_guard<std::mutex> lock(mu_);
    failed_.push_back(std::move(op));  // the transport may still use its buffer
  }
  WorkDistx::complete(work, error, completions_);
}

void P2PEngine::loop() {
  pthread_setname_np(pthread_self(), "distx-p2p");
  int idleRounds = 0;
  auto lastCheck = Clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (pending_.empty()) {
      if (stop_) return;
      cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
      continue;
    }
    const auto now = Clock::now();
    std::string failAll;  // set: every pending op fails with this reason
    if (stop_) failAll = stopWhy_ + " while the operation was pending";
    if (failAll.empty() && now - lastCheck >= kLivenessCheck) {
      lastCheck = now;
      lock.unlock();
      const bool stopping = stopping_();
      lock.lock();
      if (stopping) failAll = "the process group was shut down while the operation was pending";
      if (failAll.empty() && !pending_.empty()) {
        // wait() with a deadline of now reports an aborted transport (a dead
        // peer) as PeerFailure and an unfinished request as Timeout.
        try {
          transport_.wait(*pending_.front()->req, now, pending_.front()->describe());
        } catch (const PeerFailure& e) {
          failAll = e.what();
        } catch (const Error&) {
        }
      }
    }
    std::vector<std::pair<std::unique_ptr<Op>, std::exception_ptr>> finished;
    for (auto it = pending_.begin(); it != pending_.end();) {
      Op& op = **it;
      std::exception_ptr error;
      bool done = false;
      if (!failAll.empty()) {
        done = true;
        error = errorFor(op, failAll);
      } else {
        try {
          done = op.req->test();
        } catch (const std::exception& e) {
          done = true;
          error = errorFor(op, e.what());
        }
        if (!done && now >= op.deadline) {
          done = true;
          error = errorFor(op, detail::concat("Timed out after ", op.timeout.count(),
                                              " ms (the peer never posted the matching op, "
                                              "is slow, or died)"));
        }
      }
      if (done) {
        finished.emplace_back(std::move(*it), error);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    if (!finished.empty()) {
      lock.unlock();
      for (auto& f : finished)
        finish(std::move(f.first), f.second);
      lock.lock();
      idleRounds = 0;
    } else if (++idleRounds < kSpinRounds) {
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    } else {
      cv_.wait_for(lock, kIdleSleep);
    }
  }
}

// ---- the overrides ----------------------------------------------------------

P2PEngine& ProcessGroupDistx::p2pEngine(const char* opName) {
  std::lock_guard<std::mutex> lock(mu_);
  checkUsable(opName, stopping_);
  if (!p2p_) {
    p2p_ = std::make_shared<P2PEngine>(
        *transport_, pgTag_,
        [this] {
          std::lock_guard<std::mutex> l(mu_);
          return stopping_;
        },
        detail::concat("[distx rank ", rank_, "/", size_, " pg ", groupName_));
  }
  return *p2p_;
}

void ProcessGroupDistx::stopP2P(const std::string& why) {
  std::shared_ptr<P2PEngine> p2p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    p2p = p2p_;
  }
  if (p2p) p2p->stop(why);
}

std::chrono::milliseconds ProcessGroupDistx::p2pTimeout() {
  std::lock_guard<std::mutex> lock(mu_);
  return timeout_.load();
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::send(std::vector<at::Tensor>& tensors,
                                                       int dstRank, int tag) {
  if (onCuda("send", tensors)) return cuda().send(tensors, dstRank, tag);
  const at::Tensor& t = singleTensor(tensors, "send");
  checkPeer(dstRank, rank_, size_, "send", "destination");
  return p2pEngine("send").send(t, dstRank, tag, p2pTimeout());
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::recv(std::vector<at::Tensor>& tensors,
                                                       int srcRank, int tag) {
  if (onCuda("recv", tensors)) return cuda().recv(tensors, srcRank, tag);
  const at::Tensor& t = singleTensor(tensors, "recv");
  checkPeer(srcRank, rank_, size_, "recv", "source");
  return p2pEngine("recv").recv(t, srcRank, tag, p2pTimeout());
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::recvAnysource(std::vector<at::Tensor>& tensors,
                                                                int tag) {
  if (onCuda("recv", tensors)) return cuda().recvAnysource(tensors, tag);
  const at::Tensor& t = singleTensor(tensors, "recv");
  return p2pEngine("recv").recv(t, -1, tag, p2pTimeout());
}

}  // namespace distx
