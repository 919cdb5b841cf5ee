// NCCL communicators for the CUDA path, with NCCL loaded at run time.
//
// Note [Loading NCCL]
// The extension does not link against libnccl: the CUDA build of torch brings
// NCCL as the `nvidia-nccl-cu13` wheel (site-packages/nvidia/nccl/lib/
// libnccl.so.2, found by its RPATH, not by LD_LIBRARY_PATH), and a second link
// dependency would have to find it the same way. So nccl_comm.cpp dlopen()s it
// on first use: the path torch_distx/__init__.py found through the
// `nvidia.nccl` package (setLibraryPath), else the SONAME "libnccl.so.2", which
// resolves to the copy torch already loaded. Only the .cpp includes <nccl.h>
// (from the same wheel at build time); this header is NCCL- and CUDA-free, so
// backend/ can use it without NCCL headers.
//
// Note [Non-blocking communicators]
// Communicators are created with config.blocking = 0: initialisation and every
// call may return ncclInProgress, and we poll ncclCommGetAsyncError until the
// call settles or a deadline passes. That keeps every wait bounded: a rank that
// never joins makes init time out (then the communicator is aborted) instead
// of blocking the caller forever, and abort() works from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "common/dtype.h"
#include "transport/transport.h"  // Clock, Deadline

namespace distx::nccl {

// cudaStream_t without the CUDA headers.
using Stream = void*;

// ncclUniqueId's bytes (NCCL_UNIQUE_ID_BYTES; static_asserted in the .cpp).
struct UniqueId {
  std::array<uint8_t, 128> bytes{};
};

// Where to load libnccl.so.2 from (empty: by SONAME). Call before first use.
void setLibraryPath(const std::string& path);
// The loaded library's path (dladdr) and version (ncclGetVersion, e.g. 22809);
// both load NCCL, throwing TransportError with a hint when it cannot be found.
std::string loadedLibraryPath();
int version();
// NCCL_VERSION_CODE of the headers the extension was compiled against.
int compiledVersion();

UniqueId makeUniqueId();

// Whether NCCL reduces `dt` with `op` natively (Comm::mapped() applies the
// remapping of bool, complex and int16 described there).
bool reduceSupported(DType dt, ReduceOp op);

class Comm {
 public:
  // Joins the communicator of `nranks` ranks on the current CUDA device (the
  // caller sets it). Throws Timeout (after aborting) if the others do not join
  // before `deadline`, TransportError for an NCCL error.
  static std::unique_ptr<Comm> create(int nranks, int rank, const UniqueId& id, Deadline deadline);
  ~Comm();  // finalizes and destroys (bounded); aborts if that does not settle
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Enqueue on `stream`. Counts are in elements of `dt`. Reductions accept what
  // reduceSupported() accepts; data movement accepts every DType (as bytes).
  // Throw TransportError on an NCCL error, Timeout if an in-progress call does
  // not settle by `deadline`.
  void allReduce(const void* send, void* recv, size_t count, DType dt, ReduceOp op, Stream s,
                 Deadline deadline);
  void reduce(const void* send, void* recv, size_t count, DType dt, ReduceOp op, int root, Stream s,
              Deadline deadline);
  void broadcast(const void* send, void* recv, size_t count, DType dt, int root, Stream s,
                 Deadline deadline);
  // recv holds size() blocks of `sendCount`; block r is rank r's send.
  void allGather(const void* send, void* recv, size_t sendCount, DType dt, Stream s,
                 Deadline deadline);
  // send holds size() blocks of `recvCount`; this rank gets block rank() reduced.
  void reduceScatter(const void* send, void* recv, size_t recvCount, DType dt, ReduceOp op,
                     Stream s, Deadline deadline);
  // Point-to-point in bytes; call between groupStart() and groupEnd() to fuse.
  void send(const void* buf, size_t bytes, int peer, Stream s, Deadline deadline);
  void recv(void* buf, size_t bytes, int peer, Stream s, Deadline deadline);
  void groupStart();
  void groupEnd(Deadline deadline);

  // ncclCommAbort, at most once, from any thread (the watchdog's). Every later
  // call throws TransportError naming `why`.
  void abort(const std::string& why);
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  // The communicator's asynchronous error ("" when none), e.g. a remote peer failed.
  std::string asyncError();

 private:
  Comm(void* comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}
  // Calls fn (an NCCL call returning ncclResult_t) unless aborted, then settle()s.
  template <typename Fn>
  void run(const char* what, Deadline deadline, Fn&& fn);
  // Turns an ncclResult_t into success, or waits out ncclInProgress, or throws.
  void settle(int result, const char* what, Deadline deadline);
  void throwIfAborted(const char* what);

  void* comm_;  // ncclComm_t
  const int rank_;
  const int size_;
  std::shared_mutex useMu_;  // shared by calls, exclusive for ncclCommAbort
  std::mutex abortMu_;
  std::string abortWhy_;
  std::atomic<bool> aborted_{false};
};

}  // namespace distx::nccl
