#include "transport/ucx/ucx_transport.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "common/env.h"
#include "common/logging.h"
#include "common/tag.h"
#include "transport/ucx/ucx_memory.h"

namespace distx::ucx {
namespace {

// How long a waiter keeps progressing without events before it sleeps. Long
// spins win latency when every rank has a core; when ranks outnumber cores the
// spinning would steal the peers' CPU, so it is kept short (DISTX_SPIN_US).
std::chrono::microseconds spinIdle(int worldSize) {
  const long long us = env::spinMicros();
  if (us >= 0) return std::chrono::microseconds(us);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return std::chrono::microseconds(static_cast<unsigned>(worldSize) <= cores ? 2000 : 50);
}

// Shared between a Request (the owner) and UCX's callback. Whoever finishes
// last frees the ucp request and this state (Note [Request ownership]).
struct State {
  enum : int { kOwnerGone = 1, kUcxDone = 2 };
  std::atomic<int> flags{0};
  std::atomic<int> status{1};  // UCS_INPROGRESS until the callback stores the final status
  size_t length = 0;
  uint64_t senderTag = 0;
  void* ucpRequest = nullptr;
  std::shared_ptr<Waker> waker;
  ucp_tag_recv_info_t info{};
  bool isRecv = false;
  int peer = -1;
  ucp_worker_h worker = nullptr;  // where a receive was posted (to cancel it)
};

// Note [Request ownership]
// The callback never races the owner into a double free: it sets kUcxDone and
// frees only if the owner already left (kOwnerGone); the owner sets kOwnerGone
// and frees only if UCX already finished. A receive abandoned incomplete is
// cancelled first (it completes with UCS_ERR_CANCELED through the callback).
// The callback may run on any group's thread (the worker is shared), so it
// notifies through the state's own reference to the group's Waker.
void finishFromUcx(State* st, void* request, ucs_status_t status) {
  std::shared_ptr<Waker> waker = st->waker;  // st may be freed by the owner once kUcxDone is set
  st->status.store(static_cast<int>(status), std::memory_order_release);
  const int prev = st->flags.fetch_or(State::kUcxDone, std::memory_order_acq_rel);
  if (prev & State::kOwnerGone) {
    ucp_request_free(request);
    delete st;
    waker->abandoned.fetch_sub(1, std::memory_order_acq_rel);
    return;
  }
  waker->notify();
}

void sendCallback(void* request, ucs_status_t status, void* userData) {
  finishFromUcx(static_cast<State*>(userData), request, status);
}

void recvCallback(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                  void* userData) {
  auto* st = static_cast<State*>(userData);
  if (status == UCS_OK && info) {
    st->length = info->length;
    st->senderTag = info->sender_tag;
  }
  finishFromUcx(st, request, status);
}

class UcxRequest final : public Request {
 public:
  UcxRequest(State* st, std::shared_ptr<Runtime> runtime) : st_(st), runtime_(std::move(runtime)) {}
  ~UcxRequest() override {
    if (!st_->ucpRequest) {  // completed immediately; UCX holds nothing
      delete st_;
      return;
    }
    const bool done = st_->flags.load(std::memory_order_acquire) & State::kUcxDone;
    if (st_->isRecv && !done) {
      ucp_request_cancel(st_->worker, st_->ucpRequest);  // no-op if it completed meanwhile
    }
    // Counted before kOwnerGone is visible, so the callback's decrement can
    // never come first (Note [Parked buffers]).
    Waker& waker = *st_->waker;
    waker.abandoned.fetch_add(1, std::memory_order_acq_rel);
    const int prev = st_->flags.fetch_or(State::kOwnerGone, std::memory_order_acq_rel);
    if (prev & State::kUcxDone) {
      waker.abandoned.fetch_sub(1, std::memory_order_acq_rel);
      ucp_request_free(st_->ucpRequest);
      delete st_;
    }
  }
  bool test() override {
    const int s = st_->status.load(std::memory_order_acquire);
    if (s == UCS_INPROGRESS) return false;
    if (s != UCS_OK) {
      throw TransportError(
          detail::concat(st_->isRecv ? "recv from rank " : "send to rank ", st_->peer,
                         " failed: ", ucs_status_string(static_cast<ucs_status_t>(s))));
    }
    return true;
  }
  size_t receivedBytes() const override { return st_->length; }
  int source() const override { return static_cast<int>(tag::srcOf(st_->senderTag)); }

 private:
  State* st_;
  std::shared_ptr<Runtime> runtime_;  // the worker outlives every request on it
};

// Note [Buffer memory type]
// A UCX without CUDA support is told that every buffer is host memory, which
// skips its memory-type detection on every request. A UCX built with CUDA may
// be handed device pointers (the direct rail, Note [CUDA-aware rail]); there
// the type is left for UCX to detect (its memory-type cache), since telling it
// "host" for a device pointer would make it read device memory from the CPU.
void declareMemory(ucp_request_param_t& p) {
  static const bool hostOnly = !cudaMemorySupported();
  if (!hostOnly) return;
  p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMORY_TYPE;
  p.memory_type = UCS_MEMORY_TYPE_HOST;
}

ucp_request_param_t recvParams(State* st) {
  ucp_request_param_t p{};
  p.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE |
      UCP_OP_ATTR_FIELD_RECV_INFO |
      UCP_OP_ATTR_FLAG_NO_IMM_CMPL;  // UCX 1.13 leaves recv_info empty on immediate completion
  p.cb.recv = recvCallback;
  p.user_data = st;
  p.datatype = ucp_dt_make_contig(1);
  declareMemory(p);
  p.recv_info.tag_info = &st->info;
  return p;
}

// Finishes posting a receive: `r` is what ucp_tag_(msg_)recv_nbx returned.
RequestPtr recvRequest(State* st, void* r, std::shared_ptr<Runtime> runtime) {
  if (UCS_PTR_IS_ERR(r)) {
    const ucs_status_t err = UCS_PTR_STATUS(r);
    const int src = st->peer;
    delete st;
    throw TransportError(
        detail::concat("recv from rank ", src, " failed: ", ucs_status_string(err)));
  }
  if (r == nullptr) {
    st->length = st->info.length;
    st->senderTag = st->info.sender_tag;
    st->status.store(UCS_OK);
  } else {
    st->ucpRequest = r;
  }
  return std::make_unique<UcxRequest>(st, std::move(runtime));
}

// A receive from any source when the group has peers on both workers (Note
// [Network worker]): the message is probed on each worker (and taken off its
// unexpected queue) by test(), then received with ucp_tag_msg_recv_nbx. No
// completion callback wakes a sleeping waiter before the match, so a waiter
// finds it at its next periodic check (at most 10 ms later).
class AnySourceRecv final : public Request {
 public:
  AnySourceRecv(std::shared_ptr<Runtime> runtime, std::shared_ptr<Waker> waker, uint64_t tag,
                uint64_t mask, void* buf, size_t bytes)
      : runtime_(std::move(runtime)),
        waker_(std::move(waker)),
        tag_(tag),
        mask_(mask),
        buf_(buf),
        bytes_(bytes) {}
  bool test() override {
    if (!inner_) {
      for (bool net : {false, true}) {
        ucp_tag_recv_info_t info{};
        ucp_worker_h w = runtime_->worker(net);
        ucp_tag_message_h msg = ucp_tag_probe_nb(w, tag_, mask_, /*remove=*/1, &info);
        if (!msg) continue;
        auto* st = new State;
        st->waker = waker_;
        st->isRecv = true;
        st->worker = w;
        st->peer = static_cast<int>(tag::srcOf(info.sender_tag));
        st->info = info;
        ucp_request_param_t p = recvParams(st);
        p.op_attr_mask &= ~UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
        inner_ = recvRequest(st, ucp_tag_msg_recv_nbx(w, buf_, bytes_, msg, &p), runtime_);
        break;
      }
      if (!inner_) return false;
    }
    return inner_->test();
  }
  size_t receivedBytes() const override { return inner_ ? inner_->receivedBytes() : 0; }
  int source() const override { return inner_ ? inner_->source() : -1; }

 private:
  std::shared_ptr<Runtime> runtime_;
  std::shared_ptr<Waker> waker_;
  const uint64_t tag_, mask_;
  void* const buf_;
  const size_t bytes_;
  RequestPtr inner_;
};

}  // namespace

UcxTransport::UcxTransport(int rank, int size, Bootstrap& bootstrap, Deadline deadline,
                           const std::string& runtimeKey)
    : rank_(rank), size_(size), spinIdle_(spinIdle(size)), waker_(std::make_shared<Waker>()) {
  DISTX_CHECK(size > 0 && size <= tag::kMaxRanks, InvalidArgument, "world size ", size,
              " is outside 1..", tag::kMaxRanks);
  runtime_ = Runtime::acquire(runtimeKey);
  (void)deadline;  // the store's own timeout bounds the exchange
  allocateGroupId(bootstrap);
}

UcxTransport::~UcxTransport() {
  shutdown();
}

void UcxTransport::shutdown() {
  if (idHeld_.exchange(false)) runtime_->releaseGroupId(groupId_);
}

bool UcxTransport::cudaMemory() const {
  return cudaMemorySupported();
}

std::string UcxTransport::version() {
  return ucp_get_version_string();
}

RequestPtr UcxTransport::send(int dst, uint64_t tag, const void* buf, size_t bytes) {
  DISTX_CHECK(dst >= 0 && dst < size_, InvalidArgument, "send to invalid rank ", dst);
  auto* st = new State;
  st->waker = waker_;
  st->peer = dst;
  ucp_request_param_t p{};
  p.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
  p.cb.send = sendCallback;
  p.user_data = st;
  p.datatype = ucp_dt_make_contig(1);
  declareMemory(p);
  countSent(bytes);
  void* r = ucp_tag_send_nbx(endpoints_[dst], buf, bytes, tag, &p);
  if (UCS_PTR_IS_ERR(r)) {
    const ucs_status_t err = UCS_PTR_STATUS(r);
    delete st;
    throw TransportError(detail::concat("send to rank ", dst, " failed: ", ucs_status_string(err)));
  }
  if (r == nullptr) {
    st->status.store(UCS_OK);
  } else {
    st->ucpRequest = r;
  }
  return std::make_unique<UcxRequest>(st, runtime_);
}

RequestPtr UcxTransport::recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) {
  DISTX_CHECK(src >= -1 && src < size_, InvalidArgument, "recv from invalid rank ", src);
  if (src < 0 && anyNet_) {
    return std::make_unique<AnySourceRecv>(runtime_, waker_, tag, mask, buf, bytes);
  }
  auto* st = new State;
  st->waker = waker_;
  st->peer = src;
  st->isRecv = true;
  st->worker = runtime_->worker(src >= 0 && net_[src]);
  ucp_request_param_t p = recvParams(st);
  return recvRequest(st, ucp_tag_recv_nbx(st->worker, buf, bytes, tag, mask, &p), runtime_);
}

void UcxTransport::wait(Request& req, Deadline deadline, const std::string& what) {
  if (req.test()) return;
  // Spin phase: progress ourselves while events keep coming.
  runtime_->addSpinner();
  auto lastEvent = Clock::now();
  unsigned iter = 0;
  bool done = false;
  try {
    while (true) {
      // Note [Yielding spin]: an idle round gives the core away if anything
      // else wants it (sched_yield returns at once when nothing does). With
      // more runnable threads than cores, a plain spin took the core from
      // the very peer whose message it waited for: 2 ranks on 2 busy cores,
      // 64 KiB all-reduce 1.3-1.4 ms plain, 0.25-0.4 ms yielding; 4 ranks on
      // 2 cores went from 0.5-1.2x gloo to 1.1-5x (benchmarks/allreduce.py,
      // barrier-separated).
      if (runtime_->progress() > 0) {
        lastEvent = Clock::now();
      } else {
        std::this_thread::yield();
      }
      if ((done = req.test())) break;
      if (aborted_.load(std::memory_order_acquire)) break;
      if ((++iter & 63) == 0) {
        const auto now = Clock::now();
        if (now - lastEvent > spinIdle_ || now >= deadline) break;
      }
    }
  } catch (...) {
    runtime_->removeSpinner();
    throw;
  }
  runtime_->removeSpinner();
  if (done) return;
  // Sleep phase: hand progress to the progress thread and sleep until a
  // completion, an abort or the deadline.
  ucp_worker_signal(runtime_->worker(false));
  std::unique_lock<std::mutex> lock(waker_->mu);
  while (!req.test()) {
    if (aborted_.load(std::memory_order_acquire)) {
      std::string reason;
      {
        std::lock_guard<std::mutex> g(mu_);
        reason = abortReason_;
      }
      throw PeerFailure(reason + " (while waiting: " + what + ")");
    }
    if (Clock::now() >= deadline) throw Timeout("Timed out waiting for " + what);
    waker_->cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(10)));
  }
}

void UcxTransport::checkAlive(int, const std::string& what) {
  // Peer death reaches this transport as abort() (the liveness ring).
  if (!aborted_.load(std::memory_order_acquire)) return;
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reason = abortReason_;
  }
  throw PeerFailure(reason + " (while waiting: " + what + ")");
}

void UcxTransport::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_.load()) return;
    abortReason_ = reason;
    aborted_.store(true, std::memory_order_release);
  }
  waker_->notify();
}

}  // namespace distx::ucx
