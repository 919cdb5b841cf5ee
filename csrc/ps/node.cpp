#include "ps/node.h"

#include <algorithm>

#include "common/logging.h"

namespace distx::ps {
namespace {

bool contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// Scopes a Bootstrap's keys to one pair and renumbers its two ranks 0 and 1.
class PairBootstrap final : public Bootstrap {
 public:
  PairBootstrap(Bootstrap& inner, int lo, int hi)
      : inner_(inner), prefix_(detail::concat("ps_pair/", lo, "-", hi, "/")) {}
  void set(const std::string& k, const std::vector<uint8_t>& v) override {
    inner_.set(prefix_ + k, v);
  }
  std::vector<uint8_t> get(const std::string& k) override { return inner_.get(prefix_ + k); }
  int64_t add(const std::string& k, int64_t d) override { return inner_.add(prefix_ + k, d); }

 private:
  Bootstrap& inner_;
  std::string prefix_;
};

}  // namespace

Node::Node(Transport& transport, NodeConfig config, const float* init, Bootstrap* bootstrap)
    : transport_(transport),
      config_(std::move(config)),
      layout_(config_.total, config_.chunkElems, config_.servers) {
  const int me = transport_.rank();
  DISTX_CHECK(!config_.workers.empty(), InvalidArgument, "ps: no worker ranks");
  for (int r : config_.workers)
    DISTX_CHECK(r >= 0 && r < transport_.size(), InvalidArgument, "ps: worker rank ", r,
                " out of range");
  for (int r : config_.servers)
    DISTX_CHECK(r >= 0 && r < transport_.size(), InvalidArgument, "ps: server rank ", r,
                " out of range");
  if (bootstrap) {
    // Note [PS liveness]: every (server, worker) pair, in one global order.
    std::vector<std::pair<int, int>> pairs;
    for (int s : config_.servers)
      for (int w : config_.workers)
        if (s != w) pairs.emplace_back(std::min(s, w), std::max(s, w));
    std::sort(pairs.begin(), pairs.end());
    pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
    const auto deadline = Clock::now() + config_.timeout;
    for (auto [lo, hi] : pairs) {
      if (me != lo && me != hi) continue;
      const int other = me == lo ? hi : lo;
      PairBootstrap pb(*bootstrap, lo, hi);
      pairs_.push_back(std::make_unique<LivenessRing>(
          me == lo ? 0 : 1, 2, pb, deadline,
          // `how` names the pair's renumbered ranks; say it plainly instead.
          [this, other](int, const std::string&) {
            peerDied(other, "its liveness connection closed");
          }));
    }
  }
  if (contains(config_.servers, me)) {
    auto shard =
        std::make_unique<Shard>(layout_, me, config_.workers, config_.staleness, config_.optimizer);
    shard->init(init);
    server_ = std::make_unique<ServerLoop>(transport_, std::move(shard));
  }
  if (contains(config_.workers, me))
    client_ = std::make_unique<Client>(transport_, layout_, config_.timeout, config_.compression,
                                       config_.topkRatio);
}

Node::~Node() {
  try {
    close();
  } catch (...) {
  }
  server_.reset();
  client_.reset();
  for (auto& p : pairs_)
    p->leave();
  pairs_.clear();
}

Client& Node::client() {
  DISTX_CHECK(client_ != nullptr, InvalidArgument, "ps: rank ", transport_.rank(),
              " is a server, not a worker");
  return *client_;
}

void Node::peerDied(int rank, const std::string& how) {
  if (contains(config_.servers, rank)) {
    const std::string why = detail::concat("parameter-server shard on rank ", rank, " died (", how,
                                           "); detected by rank ", transport_.rank());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure_.empty()) failure_ = why;
    }
    DISTX_LOG(LogLevel::kError, detail::concat("[distx ps rank ", transport_.rank(), "]"), why);
    transport_.abort(why);
    return;
  }
  if (server_ && contains(config_.workers, rank)) {
    DISTX_LOG(LogLevel::kWarn, detail::concat("[distx ps rank ", transport_.rank(), "]"),
              "worker rank ", rank, " died (", how, "): dropped from the clocks");
    server_->workerDied(rank);
  }
}

std::string Node::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void Node::close() {
  if (closed_) return;
  closed_ = true;
  if (client_ && failure().empty()) client_->close();
  // Serve the others until they are done too, bounded by the timeout (nothing hangs).
  if (server_ && !server_->waitUntilIdle(Clock::now() + config_.timeout)) {
    DISTX_LOG(LogLevel::kWarn, detail::concat("[distx ps rank ", transport_.rank(), "]"),
              "closing with workers still attached after ", config_.timeout.count(), " ms");
  }
}

}  // namespace distx::ps
