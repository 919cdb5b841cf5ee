#include "transport/ucx/ucx_transport.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>

#include "common/env.h"
#include "common/logging.h"
#include "common/tag.h"

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
constexpr int kEpollTimeoutMs = 50;

// Shared between a Request (the owner) and UCX's callback. Whoever finishes
// last frees the ucp request and this state (Note [Request ownership]).
struct State {
  enum : int { kOwnerGone = 1, kUcxDone = 2 };
  std::atomic<int> flags{0};
  std::atomic<int> status{1};  // UCS_INPROGRESS until the callback stores the final status
  size_t length = 0;
  uint64_t senderTag = 0;
  void* ucpRequest = nullptr;
  UcxTransport* owner = nullptr;
  ucp_tag_recv_info_t info{};
  bool isRecv = false;
  int peer = -1;
};

// Note [Request ownership]
// The callback never races the owner into a double free: it sets kUcxDone and
// frees only if the owner already left (kOwnerGone); the owner sets kOwnerGone
// and frees only if UCX already finished. A receive abandoned incomplete is
// cancelled first (it completes with UCS_ERR_CANCELED through the callback).
void finishFromUcx(State* st, void* request, ucs_status_t status) {
  UcxTransport* owner = st->owner;
  st->status.store(static_cast<int>(status), std::memory_order_release);
  const int prev = st->flags.fetch_or(State::kUcxDone, std::memory_order_acq_rel);
  if (prev & State::kOwnerGone) {
    ucp_request_free(request);
    delete st;
    return;
  }
  owner->notifyCompletion();
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
  UcxRequest(State* st, ucp_worker_h worker) : st_(st), worker_(worker) {}
  ~UcxRequest() override {
    if (!st_->ucpRequest) {  // completed immediately; UCX holds nothing
      delete st_;
      return;
    }
    if (st_->isRecv && !(st_->flags.load(std::memory_order_acquire) & State::kUcxDone)) {
      ucp_request_cancel(worker_, st_->ucpRequest);  // no-op if it completed meanwhile
    }
    const int prev = st_->flags.fetch_or(State::kOwnerGone, std::memory_order_acq_rel);
    if (prev & State::kUcxDone) {
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
  ucp_worker_h worker_;
};

}  // namespace

UcxTransport::UcxTransport(int rank, int size, Bootstrap& bootstrap, Deadline deadline)
    : rank_(rank), size_(size), spinIdle_(spinIdle(size)) {
  DISTX_CHECK(size > 0 && size <= tag::kMaxRanks, InvalidArgument, "world size ", size,
              " is outside 1..", tag::kMaxRanks);
  context_ = std::make_shared<Context>(size);
  worker_ = std::make_unique<Worker>(context_);

  int efd = -1;
  check(ucp_worker_get_efd(worker_->get(), &efd), "ucp_worker_get_efd");
  epollFd_ = epoll_create1(EPOLL_CLOEXEC);
  DISTX_CHECK(epollFd_ >= 0, TransportError, "epoll_create1 failed");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = efd;
  DISTX_CHECK(epoll_ctl(epollFd_, EPOLL_CTL_ADD, efd, &ev) == 0, TransportError,
              "epoll_ctl failed");
  progressThread_ = std::thread([this] { progressLoop(); });

  try {
    const std::string addr = worker_->address();
    bootstrap.set("ucx_addr/" + std::to_string(rank_),
                  std::vector<uint8_t>(addr.begin(), addr.end()));
    endpoints_.assign(size_, nullptr);
    for (int r = 0; r < size_; ++r) {
      const auto peer = bootstrap.get("ucx_addr/" + std::to_string(r));
      ucp_ep_params_t ep{};
      ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
      ep.address = reinterpret_cast<const ucp_address_t*>(peer.data());
      ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
      check(ucp_ep_create(worker_->get(), &ep, &endpoints_[r]), "ucp_ep_create");
    }
    (void)deadline;
  } catch (...) {
    stopProgressThread();
    throw;
  }
}

UcxTransport::~UcxTransport() {
  stopProgressThread();
  if (!shutDown_) {
    // Not shut down collectively (process exit, error path): drop endpoints
    // without flushing; ucp_worker_destroy releases what remains.
    endpoints_.clear();
  }
  if (epollFd_ >= 0) close(epollFd_);
  if (aborted_.load()) {
    // After a peer died, sends to it never complete; destroying the worker
    // would make UCX walk (and warn about) their half-done protocol state.
    // The handles are deliberately leaked: the process usually exits next.
    (void)worker_.release();
    new std::shared_ptr<Context>(std::move(context_));
    return;
  }
  worker_.reset();
  context_.reset();
}

std::string UcxTransport::version() {
  return ucp_get_version_string();
}

void UcxTransport::notifyCompletion() {
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
}

RequestPtr UcxTransport::send(int dst, uint64_t tag, const void* buf, size_t bytes) {
  DISTX_CHECK(dst >= 0 && dst < size_, InvalidArgument, "send to invalid rank ", dst);
  auto* st = new State;
  st->owner = this;
  st->peer = dst;
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                   UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_MEMORY_TYPE;
  p.cb.send = sendCallback;
  p.user_data = st;
  p.datatype = ucp_dt_make_contig(1);
  p.memory_type = UCS_MEMORY_TYPE_HOST;
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
  return std::make_unique<UcxRequest>(st, worker_->get());
}

RequestPtr UcxTransport::recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) {
  auto* st = new State;
  st->owner = this;
  st->peer = src;
  st->isRecv = true;
  ucp_request_param_t p{};
  p.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE |
      UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FIELD_RECV_INFO |
      UCP_OP_ATTR_FLAG_NO_IMM_CMPL;  // UCX 1.13 leaves recv_info empty on immediate completion
  p.cb.recv = recvCallback;
  p.user_data = st;
  p.datatype = ucp_dt_make_contig(1);
  p.memory_type = UCS_MEMORY_TYPE_HOST;
  p.recv_info.tag_info = &st->info;
  void* r = ucp_tag_recv_nbx(worker_->get(), buf, bytes, tag, mask, &p);
  if (UCS_PTR_IS_ERR(r)) {
    const ucs_status_t err = UCS_PTR_STATUS(r);
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
  return std::make_unique<UcxRequest>(st, worker_->get());
}

void UcxTransport::wait(Request& req, Deadline deadline, const std::string& what) {
  if (req.test()) return;
  ucp_worker_h w = worker_->get();
  // Spin phase: progress ourselves while events keep coming.
  spinners_.fetch_add(1, std::memory_order_acq_rel);
  auto lastEvent = Clock::now();
  unsigned iter = 0;
  bool done = false;
  while (true) {
    if (ucp_worker_progress(w) > 0) lastEvent = Clock::now();
    if ((done = req.test())) break;
    if (aborted_.load(std::memory_order_acquire)) break;
    if ((++iter & 63) == 0) {
      const auto now = Clock::now();
      if (now - lastEvent > spinIdle_ || now >= deadline) break;
    }
  }
  spinners_.fetch_sub(1, std::memory_order_acq_rel);
  if (done) return;
  // Sleep phase: hand progress to the progress thread and sleep until a
  // completion, an abort or the deadline.
  ucp_worker_signal(w);
  std::unique_lock<std::mutex> lock(mu_);
  while (!req.test()) {
    if (aborted_.load(std::memory_order_acquire))
      throw PeerFailure(abortReason_ + " (while waiting: " + what + ")");
    if (Clock::now() >= deadline) throw Timeout("Timed out waiting for " + what);
    cv_.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(10)));
  }
}

void UcxTransport::abort(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_.load()) return;
    abortReason_ = reason;
    aborted_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

void UcxTransport::progressLoop() {
  ucp_worker_h w = worker_->get();
  epoll_event ev{};
  while (!stop_.load(std::memory_order_acquire)) {
    if (spinners_.load(std::memory_order_acquire) > 0) {
      // A waiter is progressing; stay out of its way.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    while (ucp_worker_progress(w) > 0) {
    }
    const ucs_status_t st = ucp_worker_arm(w);
    if (st == UCS_ERR_BUSY) continue;
    if (st != UCS_OK) {
      DISTX_LOG(LogLevel::kError, "[distx progress]",
                "ucp_worker_arm failed: ", ucs_status_string(st));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    epoll_wait(epollFd_, &ev, 1, kEpollTimeoutMs);
  }
}

void UcxTransport::stopProgressThread() {
  if (!progressThread_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  ucp_worker_signal(worker_->get());
  progressThread_.join();
}

void UcxTransport::storeBarrier(Bootstrap& bootstrap, const std::string& key, Deadline deadline) {
  bootstrap.add(key, 1);
  while (bootstrap.add(key, 0) < size_) {
    if (Clock::now() >= deadline) {
      DISTX_LOG(LogLevel::kWarn, detail::concat("[distx ", rank_, "/", size_, "]"),
                "shutdown: not every rank reached '", key, "' in time; closing anyway");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void UcxTransport::shutdown(Bootstrap* bootstrap, Deadline deadline) {
  if (shutDown_) return;
  shutDown_ = true;
  const bool clean = !aborted_.load() && bootstrap != nullptr;
  if (!clean) {
    // A peer is gone or we are aborting: flushing could wait on a dead peer.
    // Dropping the endpoints lets ucp_worker_destroy release them.
    endpoints_.clear();
    stopProgressThread();
    return;
  }
  storeBarrier(*bootstrap, "ucx_fin_1", deadline);
  std::vector<void*> closing;
  for (ucp_ep_h ep : endpoints_) {
    if (!ep) continue;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = 0;  // flush, then close
    void* r = ucp_ep_close_nbx(ep, &p);
    if (r && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
  }
  endpoints_.clear();
  for (void* r : closing) {
    while (ucp_request_check_status(r) == UCS_INPROGRESS && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));  // progress thread flushes
    }
    if (ucp_request_check_status(r) != UCS_INPROGRESS) ucp_request_free(r);
  }
  storeBarrier(*bootstrap, "ucx_fin_2", deadline);
  stopProgressThread();
}

}  // namespace distx::ucx
