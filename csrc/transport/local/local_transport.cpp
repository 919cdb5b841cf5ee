#include "transport/local/local_transport.h"

#include <cstring>

#include "common/error.h"

namespace distx {

struct LocalFabric::State {
  uint64_t tag = 0;
  uint64_t mask = 0;
  int peer = -1;  // recv: expected source (-1 any); send: destination
  void* buf = nullptr;
  const void* sendBuf = nullptr;  // rendezvous send: read when a receive matches
  size_t capacity = 0;            // recv: buffer size; rendezvous send: payload size
  bool isRecv = false;
  bool done = false;
  std::string error;
  size_t received = 0;
  int source = -1;
};

const char* localProtocolName(LocalProtocol p) {
  return p == LocalProtocol::kRendezvous ? "rendezvous" : "eager";
}

namespace {

class LocalRequest final : public Request {
 public:
  // box >= 0: the request may still be queued in that rank's mailbox.
  LocalRequest(std::shared_ptr<LocalFabric::State> s, std::shared_ptr<LocalFabric> fabric,
               int box = -1)
      : state_(std::move(s)), fabric_(std::move(fabric)), box_(box) {}
  // An abandoned request must not keep a pointer into the caller's buffer.
  ~LocalRequest() override {
    if (box_ >= 0) fabric_->cancel(state_, box_);
  }
  bool test() override {
    std::lock_guard<std::mutex> lock(mutex());
    if (!state_->error.empty()) throw TransportError(state_->error);
    return state_->done;
  }
  size_t receivedBytes() const override { return state_->received; }
  int source() const override { return state_->source; }
  std::mutex& mutex() { return fabric_->mutexForRequests(); }
  std::shared_ptr<LocalFabric::State> state_;
  std::shared_ptr<LocalFabric> fabric_;
  int box_;
};

// Delivers `bytes` from `data` (sent by `src`) into the posted receive `r`.
void deliver(LocalFabric::State& r, int src, const void* data, size_t bytes) {
  if (bytes > r.capacity) {
    r.error = detail::concat("message of ", bytes, " bytes from rank ", src, " truncated to ",
                             r.capacity);
  } else if (bytes > 0) {
    std::memcpy(r.buf, data, bytes);
  }
  r.received = bytes;
  r.source = src;
  r.done = true;
}

}  // namespace

LocalFabric::LocalFabric(int size, LocalProtocol protocol)
    : protocol_(protocol), boxes_(size), dead_(size, false), aborted_(size) {}

void LocalFabric::kill(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  dead_[rank] = true;
  cv_.notify_all();
}

void LocalFabric::cancel(const std::shared_ptr<State>& state, int box) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state->done) return;
  auto& b = boxes_[box];
  if (state->isRecv) {
    b.posted.remove(state);
    return;
  }
  for (auto it = b.unexpected.begin(); it != b.unexpected.end(); ++it) {
    if (it->pending == state) {
      b.unexpected.erase(it);
      return;
    }
  }
}

LocalTransport::LocalTransport(std::shared_ptr<LocalFabric> fabric, int rank)
    : fabric_(std::move(fabric)),
      rank_(rank),
      sentTo_(fabric_->size()),
      messagesTo_(fabric_->size()) {}

int LocalTransport::size() const {
  return fabric_->size();
}

RequestPtr LocalTransport::send(int dst, uint64_t tag, const void* buf, size_t bytes) {
  DISTX_CHECK(dst >= 0 && dst < size(), InvalidArgument, "send to invalid rank ", dst);
  auto state = std::make_shared<LocalFabric::State>();
  state->peer = dst;
  countSent(bytes);
  sentTo_[dst].fetch_add(bytes, std::memory_order_relaxed);
  messagesTo_[dst].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(fabric_->mu_);
  auto& box = fabric_->boxes_[dst];
  for (auto it = box.posted.begin(); it != box.posted.end(); ++it) {
    auto& r = **it;
    if ((tag & r.mask) != (r.tag & r.mask) || (r.peer >= 0 && r.peer != rank_)) continue;
    deliver(r, rank_, buf, bytes);
    box.posted.erase(it);
    state->done = true;
    fabric_->cv_.notify_all();
    return std::make_unique<LocalRequest>(state, fabric_);
  }
  if (fabric_->protocol_ == LocalProtocol::kRendezvous) {
    state->sendBuf = buf;  // the receiver copies from here once it matches
    state->capacity = bytes;
    box.unexpected.push_back({tag, rank_, {}, state});
    return std::make_unique<LocalRequest>(state, fabric_, dst);
  }
  const auto* p = static_cast<const uint8_t*>(buf);
  box.unexpected.push_back({tag, rank_, std::vector<uint8_t>(p, p + bytes), nullptr});
  state->done = true;  // buffered: the send buffer is reusable at once
  fabric_->cv_.notify_all();
  return std::make_unique<LocalRequest>(state, fabric_);
}

RequestPtr LocalTransport::recv(int src, uint64_t tag, uint64_t mask, void* buf, size_t bytes) {
  auto state = std::make_shared<LocalFabric::State>();
  state->tag = tag;
  state->mask = mask;
  state->peer = src;
  state->buf = buf;
  state->capacity = bytes;
  state->isRecv = true;
  std::lock_guard<std::mutex> lock(fabric_->mu_);
  auto& box = fabric_->boxes_[rank_];
  for (auto it = box.unexpected.begin(); it != box.unexpected.end(); ++it) {
    if ((it->tag & mask) != (tag & mask) || (src >= 0 && it->src != src)) continue;
    if (it->pending) {  // rendezvous: copy from the sender's buffer, completing its send
      deliver(*state, it->src, it->pending->sendBuf, it->pending->capacity);
      it->pending->done = true;
      fabric_->cv_.notify_all();
    } else {
      deliver(*state, it->src, it->payload.data(), it->payload.size());
    }
    box.unexpected.erase(it);
    return std::make_unique<LocalRequest>(state, fabric_);
  }
  box.posted.push_back(state);
  return std::make_unique<LocalRequest>(state, fabric_, rank_);
}

void LocalTransport::wait(Request& req, Deadline deadline, const std::string& what) {
  auto& state = static_cast<LocalRequest&>(req).state_;
  std::unique_lock<std::mutex> lock(fabric_->mu_);
  for (;;) {
    if (!state->error.empty()) throw TransportError(state->error + " (" + what + ")");
    if (state->done) return;
    if (!fabric_->aborted_[rank_].empty())
      throw PeerFailure(fabric_->aborted_[rank_] + " (" + what + ")");
    if (fabric_->dead_[rank_]) throw PeerFailure("local rank was killed (" + what + ")");
    if (state->peer >= 0 && fabric_->dead_[state->peer]) {
      throw PeerFailure(detail::concat("peer rank ", state->peer, " failed (", what, ")"));
    }
    if (fabric_->cv_.wait_until(lock, deadline) == std::cv_status::timeout && !state->done) {
      throw Timeout(detail::concat("Timed out ", what));
    }
  }
}

void LocalTransport::checkAlive(int peer, const std::string& what) {
  std::lock_guard<std::mutex> lock(fabric_->mu_);
  if (!fabric_->aborted_[rank_].empty())
    throw PeerFailure(fabric_->aborted_[rank_] + " (" + what + ")");
  if (fabric_->dead_[rank_]) throw PeerFailure("local rank was killed (" + what + ")");
  if (peer >= 0 && peer < static_cast<int>(fabric_->dead_.size()) && fabric_->dead_[peer])
    throw PeerFailure(detail::concat("peer rank ", peer, " failed (", what, ")"));
}

void LocalTransport::abort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(fabric_->mu_);
  fabric_->aborted_[rank_] = reason;
  fabric_->cv_.notify_all();
}

}  // namespace distx
