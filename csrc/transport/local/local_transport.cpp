#include "transport/local/local_transport.h"

#include <cstring>

#include "common/error.h"

namespace distx {

struct LocalFabric::State {
  uint64_t tag = 0;
  uint64_t mask = 0;
  int peer = -1;  // recv: expected source (-1 any); send: destination
  void* buf = nullptr;
  size_t capacity = 0;
  bool isRecv = false;
  bool done = false;
  std::string error;
  size_t received = 0;
  int source = -1;
};

namespace {

class LocalRequest final : public Request {
 public:
  LocalRequest(std::shared_ptr<LocalFabric::State> s, std::mutex& mu,
               std::list<std::shared_ptr<LocalFabric::State>>* posted = nullptr)
      : state_(std::move(s)), mu_(mu), posted_(posted) {}
  // An abandoned receive must not keep a pointer into the caller's buffer.
  ~LocalRequest() override {
    if (!posted_) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!state_->done) posted_->remove(state_);
  }
  bool test() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!state_->error.empty()) throw TransportError(state_->error);
    return state_->done;
  }
  size_t receivedBytes() const override { return state_->received; }
  int source() const override { return state_->source; }
  std::shared_ptr<LocalFabric::State> state_;
  std::mutex& mu_;
  std::list<std::shared_ptr<LocalFabric::State>>* posted_;
};

}  // namespace

LocalFabric::LocalFabric(int size) : boxes_(size), dead_(size, false), aborted_(size) {}

void LocalFabric::kill(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  dead_[rank] = true;
  cv_.notify_all();
}

LocalTransport::LocalTransport(std::shared_ptr<LocalFabric> fabric, int rank)
    : fabric_(std::move(fabric)), rank_(rank), sentTo_(fabric_->size()) {}

int LocalTransport::size() const {
  return fabric_->size();
}

RequestPtr LocalTransport::send(int dst, uint64_t tag, const void* buf, size_t bytes) {
  DISTX_CHECK(dst >= 0 && dst < size(), InvalidArgument, "send to invalid rank ", dst);
  auto state = std::make_shared<LocalFabric::State>();
  state->peer = dst;
  countSent(bytes);
  sentTo_[dst].fetch_add(bytes, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(fabric_->mu_);
  auto& box = fabric_->boxes_[dst];
  for (auto it = box.posted.begin(); it != box.posted.end(); ++it) {
    auto& r = **it;
    if ((tag & r.mask) != (r.tag & r.mask) || (r.peer >= 0 && r.peer != rank_)) continue;
    if (bytes > r.capacity) {
      r.error = detail::concat("message of ", bytes, " bytes from rank ", rank_, " truncated to ",
                               r.capacity);
    } else if (bytes > 0) {
      std::memcpy(r.buf, buf, bytes);
    }
    r.received = bytes;
    r.source = rank_;
    r.done = true;
    box.posted.erase(it);
    state->done = true;
    fabric_->cv_.notify_all();
    return std::make_unique<LocalRequest>(state, fabric_->mu_);
  }
  const auto* p = static_cast<const uint8_t*>(buf);
  box.unexpected.push_back({tag, rank_, std::vector<uint8_t>(p, p + bytes)});
  state->done = true;  // buffered: the send buffer is reusable at once
  fabric_->cv_.notify_all();
  return std::make_unique<LocalRequest>(state, fabric_->mu_);
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
    if (it->payload.size() > bytes) {
      state->error = detail::concat("message of ", it->payload.size(), " bytes from rank ", it->src,
                                    " truncated to ", bytes);
    } else if (!it->payload.empty()) {
      std::memcpy(buf, it->payload.data(), it->payload.size());
    }
    state->received = it->payload.size();
    state->source = it->src;
    state->done = true;
    box.unexpected.erase(it);
    return std::make_unique<LocalRequest>(state, fabric_->mu_);
  }
  box.posted.push_back(state);
  return std::make_unique<LocalRequest>(state, fabric_->mu_, &box.posted);
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

void LocalTransport::abort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(fabric_->mu_);
  fabric_->aborted_[rank_] = reason;
  fabric_->cv_.notify_all();
}

}  // namespace distx
