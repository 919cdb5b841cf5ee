#include "backend/process_group_distx.hpp"

#include <c10/util/Exception.h>

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <functional>

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

// How long the idle worker thread polls its queue before sleeping.
constexpr auto kWorkerPoll = std::chrono::microseconds(50);

std::chrono::milliseconds effectiveTimeout(std::chrono::milliseconds op,
                                           std::chrono::milliseconds group) {
  return op == c10d::kUnsetTimeout ? group : op;
}

}  // namespace

ProcessGroupDistx::ProcessGroupDistx(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                     int size, Config config)
    : c10d::Backend(rank, size),
      groupName_(config.groupName),
      chunkBytes_([] {
        try {
          env::logLevel();
          env::ucxCuda();  // validated here, used by the CUDA path (Note [CUDA-aware rail])
          return env::chunkBytes();
        } catch (const Error& e) {
          TORCH_CHECK_VALUE(false, e.what());
        }
      }()),
      pieceBytes_([] {
        try {
          return env::pieceBytes(kRailPieceAuto);
        } catch (const Error& e) {
          TORCH_CHECK_VALUE(false, e.what());
        }
      }()),
      timeout_(config.timeout),
      debugChecks_([] {
        try {
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
    selectAllreduce(0, Topology::flat(size), env::forcedAlgorithm());  // validates DISTX_ALGO now
  } catch (const Error& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
  try {
    const Deadline deadline = Clock::now() + timeout_.load();
    bootstrap_ = std::make_unique<StoreBootstrap>(store, rank, size, deadline);
    // The CUDA half's keys (NCCL unique ids) live under this incarnation too
    // (Note [Store incarnations]).
    store_ = c10::make_intrusive<c10d::PrefixStore>(
        detail::concat("distx/", bootstrap_->incarnation()), store);
    discoverTopology(deadline);
    transport_ = std::make_unique<ucx::UcxTransport>(rank, size, *bootstrap_, deadline);
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
  DISTX_LOG(LogLevel::kInfo, prefix("init", 0), "UCX ", ucx::UcxTransport::version(), ", chunk ",
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
              describeSelection(topology_, env::forcedAlgorithm()));
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

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::enqueue(c10d::OpType type, const char* opName,
                                                          std::chrono::milliseconds timeout,
                                                          std::vector<at::Tensor> outputs, Job job,
                                                          std::vector<at::Tensor> inputs) {
  std::unique_lock<std::mutex> lock(mu_);
  TORCH_CHECK(!stopping_, "distx ", opName, ": the process group was shut down or aborted");
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

c10d::Backend& ProcessGroupDistx::cuda() {
  std::lock_guard<std::mutex> lock(mu_);
  TORCH_CHECK(!stopping_, "distx: the process group was shut down or aborted");
  if (!cuda_) {
    CudaBackendDeps deps;
    deps.store = store_;
    deps.rank = rank_;
    deps.size = size_;
    deps.groupName = groupName_;
    deps.timeout = [this] { return timeout_.load(); };
    deps.nextSeq = [this] {
      std::lock_guard<std::mutex> l(mu_);
      return ++seq_;
    };
    deps.host = this;
    deps.compressor = compressor_.get();
    deps.enqueueHost = [this](c10d::OpType type, const char* opName,
                              std::chrono::milliseconds timeout, Job job) {
      return enqueue(type, opName, timeout, {}, std::move(job));
    };
    deps.numNodes = topology_.numNodes();  // Note [Multi-host CUDA]
    deps.node = topology_.nodeOf(rank_);
    deps.localRank = topology_.localRank(rank_);
    deps.localSize = topology_.localSize(rank_);
    deps.uniform = topology_.uniform();
    cuda_ = makeCudaBackend(std::move(deps));
  }
  return *cuda_;
}

c10::intrusive_ptr<c10d::Backend> ProcessGroupDistx::takeCuda() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(cuda_);
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

c10::intrusive_ptr<c10d::Backend> createProcessGroupDistx(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, double timeoutSeconds,
    const std::string& groupName, const std::map<std::string, std::string>& options) {
  ProcessGroupDistx::Config config;
  config.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000.0));
  config.groupName = groupName;
  compression::Fields fromOptions, fromEnv;
  const std::pair<const char*, std::optional<std::string> compression::Fields::*> fields[] = {
      {"compress", &compression::Fields::compress},
      {"compress_ef", &compression::Fields::errorFeedback},
      {"compress_min_bytes", &compression::Fields::minBytes},
      {"compress_scope", &compression::Fields::scope},
      {"compress_log_every", &compression::Fields::logEvery},
  };
  for (const auto& [name, member] : fields) {
    auto it = options.find(name);
    if (it != options.end()) fromOptions.*member = it->second;
  }
  for (const auto& [name, _] : options) {
    bool known = false;
    for (const auto& f : fields)
      known = known || name == f.first;
    TORCH_CHECK_VALUE(known, "distx: unknown option '", name, "'");
  }
  fromEnv.compress = env::raw("DISTX_COMPRESS");
  fromEnv.errorFeedback = env::raw("DISTX_COMPRESS_EF");
  fromEnv.minBytes = env::raw("DISTX_COMPRESS_MIN_BYTES");
  fromEnv.scope = env::raw("DISTX_COMPRESS_SCOPE");
  fromEnv.logEvery = env::raw("DISTX_COMPRESS_LOG_EVERY");
  try {
    config.compress = compression::resolve(fromOptions, fromEnv);
  } catch (const Error& e) {
    TORCH_CHECK_VALUE(false, "distx: ", e.what());
  }
  auto pg = c10::make_intrusive<ProcessGroupDistx>(store, rank, size, config);
  liveGroups().add(pg);
  return pg;
}

// Note [Shutdown at exit]
// A script that never calls destroy_process_group() (Lightning's DDP strategy
// is one) leaves the group alive into interpreter finalization. Its threads
// may still drop the last reference to a tensor Python knows, which takes
// the GIL; during finalization that call ends the thread with a forced
// unwind, and the unwind through a destructor aborts the process
// ("terminate called without an active exception"). So:
// - torch_distx registers an atexit handler, _C._shutdown_live_groups
//   (LiveGroups::shutdownAll), that runs before finalization starts, with the
//   GIL released: every group this process created and nobody shut down
//   drains its queue (for at most min(timeout, kExitShutdownCap)) and joins
//   its threads, and nothing of ours touches Python afterwards;
// - a forked child skips its parent's groups (their threads are not in the
//   child; joining them would hang);
// - the worker lets go of a job's captured tensors before it completes the
//   Work, so a caller that waited never races the worker's release.
LiveGroups& liveGroups() {
  static auto* groups = new LiveGroups();  // never destroyed: used at exit
  return *groups;
}

void LiveGroups::add(const c10::intrusive_ptr<ProcessGroupDistx>& pg) {
  std::lock_guard<std::mutex> lock(mu_);
  groups_.erase(
      std::remove_if(groups_.begin(), groups_.end(), [](const Entry& e) { return e.pg.expired(); }),
      groups_.end());
  groups_.push_back({c10::weak_intrusive_ptr<ProcessGroupDistx>(pg), getpid()});
}

int LiveGroups::shutdownAll() {
  std::vector<c10::intrusive_ptr<ProcessGroupDistx>> alive;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const pid_t self = getpid();
    for (auto& e : groups_) {
      if (e.pid != self) continue;  // a forked child's copy of its parent's group
      if (auto pg = e.pg.lock()) alive.push_back(std::move(pg));
    }
    groups_.erase(std::remove_if(groups_.begin(), groups_.end(),
                                 [self](const Entry& e) { return e.pid == self; }),
                  groups_.end());
  }
  int stopped = 0;
  for (auto& pg : alive)
    stopped += pg->shutdownAtExit() ? 1 : 0;
  return stopped;
}

}  // namespace distx
