#include "transport/ucx/ucx_transport.h"

#include <chrono>
#include <cstring>
#include <set>

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
      ucp_request_cancel(runtime_->worker(), st_->ucpRequest);  // no-op if it completed meanwhile
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

// The bootstrap value of "ucx_addr/<rank>" (Note [Shared UCX runtime]):
// [next id][n][n ids in use] as uint32, then the worker address.
std::vector<uint8_t> encodeEntry(uint32_t next, const std::vector<uint32_t>& ids,
                                 const std::string& address) {
  std::vector<uint32_t> head{next, static_cast<uint32_t>(ids.size())};
  head.insert(head.end(), ids.begin(), ids.end());
  std::vector<uint8_t> out(head.size() * sizeof(uint32_t) + address.size());
  std::memcpy(out.data(), head.data(), head.size() * sizeof(uint32_t));
  std::memcpy(out.data() + head.size() * sizeof(uint32_t), address.data(), address.size());
  return out;
}

void decodeEntry(const std::vector<uint8_t>& in, int rank, uint32_t& next, std::set<uint32_t>& ids,
                 std::string& address) {
  uint32_t word[2] = {0, 0};
  DISTX_CHECK(in.size() >= sizeof word, TransportError, "bad address entry of rank ", rank);
  std::memcpy(word, in.data(), sizeof word);
  const size_t head = sizeof(uint32_t) * (2 + static_cast<size_t>(word[1]));
  DISTX_CHECK(word[1] <= tag::kMaxGroups && in.size() > head, TransportError,
              "bad address entry of rank ", rank);
  next = std::max(next, word[0]);
  for (uint32_t i = 0; i < word[1]; ++i) {
    uint32_t id = 0;
    std::memcpy(&id, in.data() + sizeof(uint32_t) * (2 + i), sizeof id);
    ids.insert(id);
  }
  address.assign(reinterpret_cast<const char*>(in.data()) + head, in.size() - head);
}

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

void UcxTransport::allocateGroupId(Bootstrap& bootstrap) {
  auto creating = runtime_->lockGroupCreation();
  bootstrap.set(
      "ucx_addr/" + std::to_string(rank_),
      encodeEntry(runtime_->nextGroupId(), runtime_->usedGroupIds(), runtime_->address()));
  std::set<uint32_t> used;
  uint32_t next = 0;
  endpoints_.assign(size_, nullptr);
  for (int r = 0; r < size_; ++r) {
    std::string address;
    decodeEntry(bootstrap.get("ucx_addr/" + std::to_string(r)), r, next, used, address);
    endpoints_[r] = runtime_->endpoint(address);
  }
  // The first id free in every member, from the members' furthest cursor on:
  // ids go round before one is reused, so a late message of a dead group
  // cannot match a new group's receive.
  DISTX_CHECK(used.size() < tag::kMaxGroups, InvalidArgument, "more than ", tag::kMaxGroups,
              " distx process groups are alive in a member process; destroy some first");
  uint32_t id = next % tag::kMaxGroups;
  while (used.count(id))
    id = (id + 1) % tag::kMaxGroups;
  runtime_->reserveGroupId(id);
  groupId_ = id;
  idHeld_.store(true);
}

UcxTransport::~UcxTransport() {
  shutdown();
}

void UcxTransport::shutdown() {
  if (idHeld_.exchange(false)) runtime_->releaseGroupId(groupId_);
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
  return std::make_unique<UcxRequest>(st, runtime_);
}

RequestPtr UcxTransport::recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) {
  auto* st = new State;
  st->waker = waker_;
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
  void* r = ucp_tag_recv_nbx(runtime_->worker(), buf, bytes, tag, mask, &p);
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
  return std::make_unique<UcxRequest>(st, runtime_);
}

void UcxTransport::wait(Request& req, Deadline deadline, const std::string& what) {
  if (req.test()) return;
  ucp_worker_h w = runtime_->worker();
  // Spin phase: progress ourselves while events keep coming.
  runtime_->addSpinner();
  auto lastEvent = Clock::now();
  unsigned iter = 0;
  bool done = false;
  try {
    while (true) {
      if (ucp_worker_progress(w) > 0) lastEvent = Clock::now();
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
  ucp_worker_signal(w);
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
