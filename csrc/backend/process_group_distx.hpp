// ProcessGroupDistx: the c10d::Backend behind backend="distx".
//
// Note [Execution model]
// The caller's thread only checks arguments, takes the next sequence number and
// queues a job; the process group's worker thread runs jobs in issue order on
// the transport and completes each Work (and its Future). Every job has a
// deadline (the op's timeout or the group's), so a silent peer fails the Work
// with a DistBackendError naming op, sequence number, rank and peer.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "algorithms/algorithm.h"
#include "algorithms/shared_staging.h"
#include "backend/backend_overrides.hpp"
#include "backend/completion_pool.hpp"
#include "backend/compressor.hpp"
#include "backend/consistency_check.hpp"
#include "backend/contig.hpp"
#include "backend/device_dispatch.hpp"
#include "backend/work.hpp"

namespace distx {

class StoreBootstrap;
class LivenessRing;
class P2PEngine;

class ProcessGroupDistx final : public c10d::Backend {
 public:
  // Makes the group's transport once the store bootstrap and topology are
  // up; the default connects over the process's UCX runtime.
  using TransportFactory =
      std::function<std::unique_ptr<Transport>(int rank, int size, Bootstrap&, Deadline)>;
  // What a group was created with: the group settings resolved once from
  // pg_options over the environment (Note [Settings table], group_factory.cpp).
  struct Config {
    std::chrono::milliseconds timeout{30 * 60 * 1000};
    std::string groupName;
    std::string algorithm;               // DISTX_ALGO / algo; "" = choose by size
    size_t chunkBytes = 0;               // DISTX_CHUNK_BYTES; 0 = auto (Note [Chunk size])
    size_t pieceBytes = kRailPieceAuto;  // DISTX_PIECE_BYTES (Note [Pipelined split-rail])
    compression::Config compress;        // Note [Compression switch]
    TransportFactory makeTransport;      // empty: UCX
  };

  ProcessGroupDistx(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                    Config config);
  ~ProcessGroupDistx() override;

  const std::string getBackendName() const override { return "distx"; }

  // The ops both halves serve (backend_overrides.hpp), defined in
  // collectives.cpp (broadcast, all_reduce, the all-gathers),
  // collectives_reduce_scatter.cpp (the reduce-scatters, the coalesced
  // all_gather_into_tensor), collectives_rooted.cpp (reduce, gather, scatter),
  // collectives_alltoall.cpp and p2p.cpp (send, recv; Note [Point-to-point]).
  DISTX_BACKEND_OVERRIDES();
  // collectives.cpp
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override;
  // monitored_barrier.cpp
  void monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks = false) override;

  void setTimeout(std::chrono::milliseconds timeout) override;
  uint64_t getSequenceNumberForGroup() override;
  // Every rank's counter starts at 0 when the group is created, so there is
  // nothing to agree on (torch's debug wrapper for TORCH_DISTRIBUTED_DEBUG=DETAIL
  // calls this when it wraps a group).
  void setSequenceNumberForGroup() override {}
  void shutdown() override;
  void abort() override;
  // shutdown() from the atexit handler; false when already shut down.
  bool shutdownAtExit();

  // Note [Topology]: the node map of this group, every rank's host record and
  // what the exchange noticed (for torch_distx.topology()).
  const Topology& topology() const { return topology_; }
  const std::vector<HostInfo>& hosts() const { return hosts_; }
  const std::vector<std::string>& topologyNotes() const { return topologyNotes_; }
  // Note [Compression switch]: what this group compresses, and what it did.
  const Compressor& compressor() const { return *compressor_; }

 private:
  // Note [Device dispatch]: the CUDA half, created by the first CUDA call.
  c10d::Backend& cuda();
  c10::intrusive_ptr<c10d::Backend> takeCuda();  // for shutdown, abort and destruction
  void shutdownBy(Deadline deadline);            // shutdown() with its drain ending at `deadline`
  using Job = std::function<void(CollectiveContext&)>;
  struct Queued {
    c10::intrusive_ptr<WorkDistx> work;
    Job job;
    uint32_t seq;
    const char* opName;
    std::chrono::milliseconds timeout;
    OpSignature signature;  // compared across ranks when debug checks are on
  };

  // Queues `job` for the worker thread. `outputs` become the Work's result;
  // `inputs` (default: `outputs`) are what the profiler records for the op.
  c10::intrusive_ptr<c10d::Work> enqueue(c10d::OpType type, const char* opName,
                                         std::chrono::milliseconds timeout,
                                         std::vector<at::Tensor> outputs, Job job,
                                         std::vector<at::Tensor> inputs = {});
  void workerLoop();
  void run(Queued& q);
  std::string prefix(const char* opName, uint32_t seq) const;
  // Stops the worker thread. drain: let queued ops run, all done by
  // `deadline` (Note [Bounded shutdown]); else fail them unrun.
  void stopWorker(bool drain, Deadline deadline);
  Deadline shutdownDeadline() const;
  void onPeerDeath(int deadRank, const std::string& how);
  void discoverTopology(Deadline deadline);
  void checkCompressionAgrees(const compression::Config& mine);
  // collectives_sparse.cpp (Note [Sparse all-reduce]): allreduce of one sparse COO tensor.
  c10::intrusive_ptr<c10d::Work> allreduceSparse(const at::Tensor& t,
                                                 const c10d::AllreduceOptions& opts);

  const std::string groupName_;
  uint32_t pgTag_ = 0;           // the transport's group id (Note [Tag layout])
  const std::string algorithm_;  // DISTX_ALGO; "" = choose by size (Config)
  const size_t chunkBytes_;      // DISTX_CHUNK_BYTES; 0 = auto (Note [Chunk size])
  const size_t pieceBytes_;      // DISTX_PIECE_BYTES (Note [Pipelined split-rail])
  std::atomic<std::chrono::milliseconds> timeout_;  // set_timeout() may run on any thread
  c10::intrusive_ptr<c10d::Store> store_;           // the group's store, scoped to its incarnation
  std::unique_ptr<StoreBootstrap> bootstrap_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<LivenessRing> liveness_;
  std::unique_ptr<CompletionPool> completions_;  // Note [Completion threads]
  const bool debugChecks_;
  std::vector<uint8_t> scratch_;                    // worker thread only
  std::vector<std::vector<uint8_t>> stageScratch_;  // per tag phase; worker thread only
  SharedStaging staging_;                           // Note [Shared staging]; worker thread only
  Topology topology_;
  std::vector<HostInfo> hosts_;
  std::vector<std::string> topologyNotes_;
  std::unique_ptr<Compressor> compressor_;  // Note [Compression switch]
  struct Parked {                           // Note [Parked buffers]
    Job job;
    JobArena arena;
    std::vector<uint8_t> scratch;
    std::vector<std::vector<uint8_t>> stageScratch;
  };
  std::vector<Parked> parked_;  // worker thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;
  std::atomic<int> queued_{0};         // queue_.size(), readable without mu_
  uint64_t seq_ = 0;                   // guarded by mu_
  bool stopping_ = false;              // guarded by mu_
  bool workerDone_ = false;            // guarded by mu_
  std::atomic<bool> shutDown_{false};  // shutdown(), abort() and the destructor race on it
  std::atomic<Deadline> drainBy_{Deadline::max()};  // Note [Bounded shutdown]
  std::thread worker_;

  // Note [Point-to-point] (p2p.cpp): created by the first send/recv; declared
  // last so it is destroyed first, before the transport and mu_ it uses.
  P2PEngine& p2pEngine(const char* opName);
  std::chrono::milliseconds p2pTimeout();
  void stopP2P(const std::string& why);     // fails pending sends/recvs with `why`
  std::shared_ptr<P2PEngine> p2p_;          // guarded by mu_
  c10::intrusive_ptr<c10d::Backend> cuda_;  // guarded by mu_; Note [Device dispatch]
};

// Every group this process created and has not destroyed, for the atexit
// shutdown (Note [Shutdown at exit]).
class LiveGroups {
 public:
  void add(const c10::intrusive_ptr<ProcessGroupDistx>& pg);
  // Shuts down each live group this process created and has not shut down;
  // returns how many it did. A forked child skips its parent's groups: their
  // threads are not in the child. Call with the GIL released: the groups'
  // threads may need it to finish.
  int shutdownAll();

 private:
  struct Entry {
    c10::weak_intrusive_ptr<ProcessGroupDistx> pg;
    pid_t pid;  // the process that created the group
  };
  std::mutex mu_;
  std::vector<Entry> groups_;
};
LiveGroups& liveGroups();

// group_factory.cpp. `options`: the fields of torch_distx.Options the user
// set, as strings (Note [Settings table]).
c10::intrusive_ptr<c10d::Backend> createProcessGroupDistx(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, double timeoutSeconds,
    const std::string& groupName, const std::map<std::string, std::string>& options = {});

}  // namespace distx
