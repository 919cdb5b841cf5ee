#include "backend/process_group_distx.hpp"

#include <c10/util/Exception.h>

#include <algorithm>

#include "algorithms/select.h"
#include "backend/store_bootstrap.hpp"
#include "common/env.h"
#include "common/logging.h"
#include "transport/liveness.h"
#include "transport/ucx/ucx_transport.h"

namespace distx {
namespace {

// Note [Bounded shutdown]
// shutdown() lets queued work finish, but the whole drain is bounded by one
// deadline, min(timeout, kShutdownCap): every op run after shutdown began
// waits at most until then, and past it the transport is aborted so the op in
// flight fails too. A silent peer (alive, or dead with DISTX_LIVENESS=0) thus
// costs destroy_process_group one timeout, not one per queued op.
constexpr auto kShutdownCap = std::chrono::seconds(30);
// At interpreter exit (Note [Shutdown at exit]) the bound is shorter: a script
// that dies of an exception with ops queued that its peers never join should
// not sit out 30 s before it can report.
constexpr auto kExitShutdownCap = std::chrono::seconds(5);

}  // namespace

ProcessGroupDistx::ProcessGroupDistx(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                     int size, Config config)
    : c10d::Backend(rank, size),
      groupName_(config.groupName),
      algorithm_(config.algorithm),
      chunkBytes_(config.chunkBytes),
      pieceBytes_(config.pieceBytes),
      timeout_(config.timeout),
      debugChecks_([] {
        try {
          env::logLevel();  // process settings: validated at the first group
          env::ucxCuda();   // used by the CUDA path (Note [CUDA-aware rail])
          return env::debugChecks();
        } catch (const Error& e) {
          TORCH_CHECK_VALUE(false, e.what());
        }
      }()) {
  TORCH_CHECK_VALUE(size >= 1 && rank >= 0 && rank < size, "distx: invalid rank ", rank,
                    " for world size ", size);
  compressor_ = std::make_unique<Compressor>(
      config.compress, rank, size,
      detail::concat("[distx rank ", rank, "/", size, " pg ", config.groupName, " all_reduce"));
  try {
    const Deadline deadline = Clock::now() + timeout_.load();
    bootstrap_ = std::make_unique<StoreBootstrap>(store, rank, size, deadline);
    // The CUDA half's keys (NCCL unique ids) live under this incarnation too
    // (Note [Store incarnations]).
    store_ = c10::make_intrusive<c10d::PrefixStore>(
        detail::concat("distx/", bootstrap_->incarnation()), store);
    discoverTopology(deadline);
    transport_ = config.makeTransport
                     ? config.makeTransport(rank, size, *bootstrap_, deadline)
                     : std::make_unique<ucx::UcxTransport>(rank, size, *bootstrap_, deadline);
    pgTag_ = transport_->groupId();
    if (env::livenessEnabled()) {
      liveness_ = std::make_unique<LivenessRing>(
          rank, size, *bootstrap_, deadline,
          [this](int dead, const std::string& how) { onPeerDeath(dead, how); });
    }
  } catch (const Error& e) {
    C10_THROW_ERROR(DistBackendError, prefix("init", 0) + " " + e.what());
  }
  checkCompressionAgrees(config.compress);
  DISTX_LOG(LogLevel::kInfo, prefix("init", 0), transport_->describe(), ", chunk ",
            chunkBytes_
                ? std::to_string(chunkBytes_) + " B"
                : std::string("auto (") + std::to_string(kLocalChunkBytes) + " B on one host, " +
                      std::to_string(kNetChunkBytes) + " B across hosts)",
            ", timeout ", timeout_.load().count(), " ms");
  completions_ = std::make_unique<CompletionPool>();
  worker_ = std::thread([this] { workerLoop(); });
}

ProcessGroupDistx::~ProcessGroupDistx() {
  if (!shutDown_.exchange(true)) {
    // Destroyed without shutdown(): finish queued work (bounded), then leave.
    stopWorker(/*drain=*/true, shutdownDeadline());  // queued CUDA stages use the CUDA half
    takeCuda();  // its destructor finalizes the NCCL communicators
    stopP2P("the process group was destroyed");
    if (liveness_) liveness_->leave();
    transport_->shutdown();
  }
  if (!parked_.empty() && transport_->abandonedRequests() > 0) {
    // UCX may still use them after this group is gone (Note [Parked buffers]).
    DISTX_LOG(LogLevel::kInfo, prefix("destroy", 0), "leaving ", parked_.size(),
              " failed operations' buffers to requests still in flight");
    new std::vector<Parked>(std::move(parked_));
  }
}

Deadline ProcessGroupDistx::shutdownDeadline() const {
  return Clock::now() + std::min<std::chrono::milliseconds>(timeout_.load(), kShutdownCap);
}

// Note [Compression switch]: a rank that compresses while its peers do not
// would send messages of another size; say so at creation instead.
void ProcessGroupDistx::checkCompressionAgrees(const compression::Config& mine) {
  const std::string desc = mine.describe();
  bootstrap_->set("compress_cfg/" + std::to_string(rank_),
                  std::vector<uint8_t>(desc.begin(), desc.end()));
  if (rank_ == 0) return;
  const auto root = bootstrap_->get("compress_cfg/0");
  const std::string theirs(root.begin(), root.end());
  TORCH_CHECK_VALUE(theirs == desc, prefix("init", 0), " compression settings differ: rank ", rank_,
                    " has '", desc, "' (", mine.source.empty() ? "defaults" : mine.source,
                    ") but rank 0 has '", theirs,
                    "'; set DISTX_COMPRESS* / pg_options alike on every rank");
}

void ProcessGroupDistx::onPeerDeath(int deadRank, const std::string& how) {
  const std::string reason =
      detail::concat("peer rank ", deadRank, " died (", how, "; detected by rank ", rank_, ")");
  DISTX_LOG(LogLevel::kError, prefix("liveness", 0), reason,
            "; failing every pending and later operation");
  transport_->abort(reason);
}

void ProcessGroupDistx::discoverTopology(Deadline) {
  // Note [Topology] (common/topology.cpp). The store's own timeout bounds each get.
  stageScratch_.resize(tag::kMaxPhases);
  const HostInfo mine = localHostInfo();
  hosts_ = exchangeHostInfo(*bootstrap_, rank_, size_, mine);
  topology_ = topologyFromHosts(hosts_, &topologyNotes_);
  const int local = topology_.localSize(rank_);
  // torchrun's LOCAL_WORLD_SIZE describes the world group; compare only there.
  if (mine.localWorldSize > 0 && mine.worldSize == size_ && mine.localWorldSize != local) {
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      DISTX_LOG(LogLevel::kWarn, prefix("init", 0), "LOCAL_WORLD_SIZE=", mine.localWorldSize,
                " but ", local, " ranks of this group share this host (", topology_.describe(),
                "); distx follows the host ids (set DISTX_HOSTID to override)");
    }
  }
  if (rank_ == 0) {
    DISTX_LOG(LogLevel::kInfo, prefix("init", 0), "topology ", topology_.describe(), ": ",
              describeSelection(topology_, algorithm_));
  }
  for (const auto& note : topologyNotes_) {
    if (rank_ == 0) DISTX_LOG(LogLevel::kWarn, prefix("init", 0), "topology: ", note);
  }
  DISTX_LOG(LogLevel::kDebug, prefix("init", 0), "topology ", topology_.describe(),
            "; this rank: node ", topology_.nodeOf(rank_), " local rank ",
            topology_.localRank(rank_), " host '", mine.hostname, "' id ", hexId(mine.hostId),
            mine.fromEnv ? " (DISTX_HOSTID)" : "");
}

std::string ProcessGroupDistx::prefix(const char* opName, uint32_t seq) const {
  return detail::concat("[distx rank ", rank_, "/", size_, " pg ", groupName_, " ", opName, " seq ",
                        seq, "]");
}

void ProcessGroupDistx::setTimeout(std::chrono::milliseconds timeout) {
  timeout_.store(timeout);
}

uint64_t ProcessGroupDistx::getSequenceNumberForGroup() {
  std::lock_guard<std::mutex> lock(mu_);
  return seq_;
}

bool ProcessGroupDistx::shutdownAtExit() {
  if (shutDown_.load()) return false;
  DISTX_LOG(LogLevel::kInfo, prefix("exit", 0),
            "shutting down at interpreter exit (destroy_process_group() was not called)");
  shutdownBy(Clock::now() + std::min<std::chrono::milliseconds>(timeout_.load(), kExitShutdownCap));
  return true;
}

void ProcessGroupDistx::shutdown() {
  shutdownBy(shutdownDeadline());
}

void ProcessGroupDistx::shutdownBy(Deadline deadline) {
  if (shutDown_.exchange(true)) return;
  stopWorker(/*drain=*/true, deadline);  // queued CUDA stages use the CUDA half
  if (auto cuda = takeCuda()) cuda->shutdown();
  stopP2P("the process group was shut down");
  if (liveness_) liveness_->leave();
  transport_->shutdown();
}

void ProcessGroupDistx::abort() {
  if (shutDown_.exchange(true)) return;
  // Kept alive until the worker has stopped: a CUDA stage may be running on it.
  const auto cuda = takeCuda();
  if (cuda) cuda->abort();
  transport_->abort(prefix("abort", 0) + " process group aborted");
  stopP2P("the process group was aborted");
  stopWorker(/*drain=*/false, Clock::now());
  if (liveness_) liveness_->leave();
  transport_->shutdown();
}

}  // namespace distx
