#include "ps/server.h"

#include <cstring>

#include "common/error.h"
#include "common/logging.h"
#include "common/tag.h"

namespace distx::ps {

ServerLoop::ServerLoop(Transport& transport, std::unique_ptr<Shard> shard)
    : transport_(transport), shard_(std::move(shard)) {
  stats_.rejectedBy.assign(static_cast<size_t>(RejectReason::kCount_), 0);
  thread_ = std::thread([this] { loop(); });
}

ServerLoop::~ServerLoop() {
  stop();
}

void ServerLoop::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void ServerLoop::workerDied(int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  deaths_.push_back(rank);
}

std::string ServerLoop::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

ServerLoop::Stats ServerLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool ServerLoop::waitUntilIdle(Deadline deadline) {
  while (!done_.load()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
  return true;
}

void ServerLoop::flush(std::vector<Outgoing>& out) {
  for (auto& o : out) {
    Sending s;
    s.buf = std::move(o.bytes);
    // The key (slot) is at offset 8 of the header; replies match on it.
    uint32_t key;
    std::memcpy(&key, s.buf.data() + 8, sizeof key);
    s.req = transport_.send(o.dst, tag::makePs(tag::kPsToWorker, transport_.rank(), key),
                            s.buf.data(), s.buf.size());
    sending_.push_back(std::move(s));
  }
  out.clear();
}

void ServerLoop::reapSends() {
  for (auto it = sending_.begin(); it != sending_.end();) {
    bool done = false;
    try {
      done = it->req->test();
    } catch (const Error&) {
      done = false;  // failed (dead peer): keep its buffer parked until we are destroyed
    }
    it = done ? sending_.erase(it) : std::next(it);
  }
}

void ServerLoop::loop() {
  std::vector<uint8_t> buf(kHeaderBytes + shard_->maxPayloadBytes());
  std::vector<Outgoing> out;
  const uint64_t tag = tag::makePs(tag::kPsToShard, 0, 0);
  RequestPtr req;
  try {
    while (!stop_.load()) {
      if (!req) req = transport_.recv(-1, tag, tag::kPsShardMask, buf.data(), buf.size());
      bool got = false;
      RejectReason r = RejectReason::kNone;
      try {
        transport_.wait(*req, Clock::now() + std::chrono::milliseconds(kPollMs), "ps shard recv");
        got = true;
      } catch (const Timeout&) {
      } catch (const TransportError&) {
        // Oversized (truncated) message: the receive completed with an error.
        shard_->countReject(RejectReason::kTooLarge);
        r = RejectReason::kTooLarge;
        req.reset();
      }
      if (got) {
        const int src = req->source();
        const size_t n = req->receivedBytes();
        req.reset();
        r = shard_->handle(src, buf.data(), n, out);
      }
      std::vector<int> deaths;
      {
        std::lock_guard<std::mutex> lock(mu_);
        deaths.swap(deaths_);
      }
      for (int d : deaths)
        shard_->dropWorker(d, out);
      flush(out);
      reapSends();
      {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.applied = shard_->applied();
        stats_.rejected = shard_->rejectedTotal();
        for (size_t i = 0; i < stats_.rejectedBy.size(); ++i)
          stats_.rejectedBy[i] = shard_->rejected(static_cast<RejectReason>(i));
      }
      if (r != RejectReason::kNone) {
        DISTX_LOG(LogLevel::kWarn, detail::concat("[distx ps shard ", transport_.rank(), "]"),
                  "rejected a message: ", rejectReasonName(r));
      }
      if (!shard_->anyWorkerOpen()) break;
    }
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = e.what();
  }
  // Let the last replies leave before the thread ends (bounded).
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (!sending_.empty() && Clock::now() < until) {
    reapSends();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  done_.store(true);
}

}  // namespace distx::ps
