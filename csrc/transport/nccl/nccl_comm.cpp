// NCCL loaded with dlopen (Note [Loading NCCL]) and non-blocking communicators
// (Note [Non-blocking communicators]); see nccl_comm.h.
#include "transport/nccl/nccl_comm.h"

#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <shared_mutex>
#include <thread>

#include "common/error.h"

namespace distx::nccl {
namespace {

static_assert(sizeof(UniqueId::bytes) == NCCL_UNIQUE_ID_BYTES, "ncclUniqueId size changed");

// How long destruction waits for ncclCommFinalize before aborting instead.
constexpr auto kFinalizeCap = std::chrono::seconds(10);

// The entry points distx uses, resolved once from the loaded library.
struct Lib {
  void* handle = nullptr;
  std::string path;
  decltype(&ncclGetVersion) getVersion;
  decltype(&ncclGetUniqueId) getUniqueId;
  decltype(&ncclCommInitRankConfig) commInitRankConfig;
  decltype(&ncclCommFinalize) commFinalize;
  decltype(&ncclCommDestroy) commDestroy;
  decltype(&ncclCommAbort) commAbort;
  decltype(&ncclCommGetAsyncError) commGetAsyncError;
  decltype(&ncclGetErrorString) getErrorString;
  decltype(&ncclGetLastError) getLastError;
  decltype(&ncclAllReduce) allReduce;
  decltype(&ncclReduce) reduce;
  decltype(&ncclBroadcast) broadcast;
  decltype(&ncclAllGather) allGather;
  decltype(&ncclReduceScatter) reduceScatter;
  decltype(&ncclSend) send;
  decltype(&ncclRecv) recv;
  decltype(&ncclGroupStart) groupStart;
  decltype(&ncclGroupEnd) groupEnd;
};

std::mutex& pathMu() {
  static std::mutex mu;
  return mu;
}
std::string& requestedPath() {
  static std::string path;
  return path;
}

template <typename Fn>
void resolve(Lib& lib, Fn& fn, const char* name) {
  void* sym = dlsym(lib.handle, name);
  DISTX_CHECK(sym != nullptr, TransportError, "NCCL at ", lib.path, " has no symbol ", name,
              " (distx needs NCCL >= 2.14)");
  fn = reinterpret_cast<Fn>(sym);
}

const Lib& lib() {
  static const Lib loaded = [] {
    Lib l;
    std::string want;
    {
      std::lock_guard<std::mutex> lock(pathMu());
      want = requestedPath();
    }
    const std::string name = want.empty() ? std::string("libnccl.so.2") : want;
    l.handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    DISTX_CHECK(l.handle != nullptr, TransportError, "cannot load NCCL (", name, "): ", dlerror(),
                ". distx takes NCCL from the nvidia-nccl-cu13 wheel that the CUDA build of torch "
                "depends on: pip install nvidia-nccl-cu13");
    l.path = name;
    void* any = dlsym(l.handle, "ncclGetVersion");
    Dl_info info;
    if (any && dladdr(any, &info) && info.dli_fname) l.path = info.dli_fname;
    resolve(l, l.getVersion, "ncclGetVersion");
    resolve(l, l.getUniqueId, "ncclGetUniqueId");
    resolve(l, l.commInitRankConfig, "ncclCommInitRankConfig");
    resolve(l, l.commFinalize, "ncclCommFinalize");
    resolve(l, l.commDestroy, "ncclCommDestroy");
    resolve(l, l.commAbort, "ncclCommAbort");
    resolve(l, l.commGetAsyncError, "ncclCommGetAsyncError");
    resolve(l, l.getErrorString, "ncclGetErrorString");
    resolve(l, l.getLastError, "ncclGetLastError");
    resolve(l, l.allReduce, "ncclAllReduce");
    resolve(l, l.reduce, "ncclReduce");
    resolve(l, l.broadcast, "ncclBroadcast");
    resolve(l, l.allGather, "ncclAllGather");
    resolve(l, l.reduceScatter, "ncclReduceScatter");
    resolve(l, l.send, "ncclSend");
    resolve(l, l.recv, "ncclRecv");
    resolve(l, l.groupStart, "ncclGroupStart");
    resolve(l, l.groupEnd, "ncclGroupEnd");
    return l;
  }();
  return loaded;
}

std::string errorText(ncclResult_t r, ncclComm_t comm) {
  const char* last = lib().getLastError(comm);
  return detail::concat(lib().getErrorString(r), last && *last ? std::string(": ") + last : "");
}

ncclComm_t raw(void* c) {
  return static_cast<ncclComm_t>(c);
}

// The NCCL element type and count for `count` elements of `dt` moved as data
// (no reduction): complex as pairs of reals, int16 and bool as bytes.
std::pair<ncclDataType_t, size_t> dataType(DType dt, size_t count) {
  switch (dt) {
    case DType::kFloat32:
      return {ncclFloat32, count};
    case DType::kFloat64:
      return {ncclFloat64, count};
    case DType::kFloat16:
      return {ncclFloat16, count};
    case DType::kBFloat16:
      return {ncclBfloat16, count};
    case DType::kInt8:
      return {ncclInt8, count};
    case DType::kUInt8:
    case DType::kBool:
      return {ncclUint8, count};
    case DType::kInt16:
      return {ncclUint8, count * 2};
    case DType::kInt32:
      return {ncclInt32, count};
    case DType::kInt64:
      return {ncclInt64, count};
    case DType::kComplex64:
      return {ncclFloat32, count * 2};
    case DType::kComplex128:
      return {ncclFloat64, count * 2};
  }
  throw Unsupported("unknown dtype");
}

// The NCCL op for reducing `dt` with `op`. bool: SUM/BOR/MAX are a logical
// or (max of 0/1), PRODUCT/BAND/MIN a logical and (min), as ProcessGroupNCCL
// does; complex: SUM and AVG on the real pairs.
bool redOp(DType dt, ReduceOp op, ncclRedOp_t* out) {
  if (dt == DType::kBool) {
    if (op == ReduceOp::kSum || op == ReduceOp::kBOr || op == ReduceOp::kMax) {
      *out = ncclMax;
      return true;
    }
    if (op == ReduceOp::kProduct || op == ReduceOp::kBAnd || op == ReduceOp::kMin) {
      *out = ncclMin;
      return true;
    }
    return false;
  }
  if (dt == DType::kInt16) return false;
  const bool complex = dt == DType::kComplex64 || dt == DType::kComplex128;
  switch (op) {
    case ReduceOp::kSum:
      *out = ncclSum;
      return true;
    case ReduceOp::kAvg:
      *out = ncclAvg;
      return true;
    case ReduceOp::kProduct:
      *out = ncclProd;
      return !complex;
    case ReduceOp::kMin:
      *out = ncclMin;
      return !complex;
    case ReduceOp::kMax:
      *out = ncclMax;
      return !complex;
    default:
      return false;
  }
}

ncclRedOp_t checkedOp(DType dt, ReduceOp op) {
  ncclRedOp_t r;
  DISTX_CHECK(redOp(dt, op, &r), Unsupported, "NCCL cannot reduce ", dtypeName(dt), " with ",
              reduceOpName(op));
  return r;
}

}  // namespace

void setLibraryPath(const std::string& path) {
  std::lock_guard<std::mutex> lock(pathMu());
  requestedPath() = path;
}

std::string loadedLibraryPath() {
  return lib().path;
}

int version() {
  int v = 0;
  lib().getVersion(&v);
  return v;
}

int compiledVersion() {
  return NCCL_VERSION_CODE;
}

UniqueId makeUniqueId() {
  ncclUniqueId id;
  const ncclResult_t r = lib().getUniqueId(&id);
  DISTX_CHECK(r == ncclSuccess, TransportError, "ncclGetUniqueId: ", lib().getErrorString(r));
  UniqueId out;
  std::memcpy(out.bytes.data(), id.internal, out.bytes.size());
  return out;
}

bool reduceSupported(DType dt, ReduceOp op) {
  ncclRedOp_t r;
  return redOp(dt, op, &r);
}

std::unique_ptr<Comm> Comm::create(int nranks, int rank, const UniqueId& id, Deadline deadline) {
  ncclUniqueId nid;
  std::memcpy(nid.internal, id.bytes.data(), id.bytes.size());
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t c = nullptr;
  ncclResult_t r = lib().commInitRankConfig(&c, nranks, nid, rank, &config);
  DISTX_CHECK(r == ncclSuccess || r == ncclInProgress, TransportError,
              "ncclCommInitRankConfig: ", lib().getErrorString(r));
  std::unique_ptr<Comm> comm(new Comm(c, rank, nranks));
  try {
    std::shared_lock<std::shared_mutex> use(comm->useMu_);
    comm->settle(r, "ncclCommInitRankConfig", deadline);
  } catch (const Timeout&) {
    comm->abort("NCCL communicator initialisation timed out");
    throw Timeout(detail::concat("NCCL communicator of ", nranks,
                                 " ranks: not every rank joined before the deadline"));
  }
  return comm;
}

Comm::~Comm() {
  if (comm_ == nullptr) return;
  if (aborted()) return;  // ncclCommAbort freed it
  ncclResult_t r = lib().commFinalize(raw(comm_));
  const Deadline until = Clock::now() + kFinalizeCap;
  while (r == ncclInProgress && Clock::now() < until) {
    std::this_thread::yield();
    lib().commGetAsyncError(raw(comm_), &r);
  }
  if (r == ncclSuccess) {
    lib().commDestroy(raw(comm_));
  } else {
    lib().commAbort(raw(comm_));
  }
}

void Comm::settle(int result, const char* what, Deadline deadline) {
  ncclResult_t r = static_cast<ncclResult_t>(result);
  while (r == ncclInProgress && !aborted()) {
    if (Clock::now() >= deadline)
      throw Timeout(detail::concat(what, " did not complete before the deadline"));
    std::this_thread::yield();
    lib().commGetAsyncError(raw(comm_), &r);
  }
  throwIfAborted(what);
  DISTX_CHECK(r == ncclSuccess, TransportError, what, ": ", errorText(r, raw(comm_)));
}

void Comm::throwIfAborted(const char* what) {
  if (!aborted()) return;
  std::lock_guard<std::mutex> lock(abortMu_);
  throw TransportError(
      detail::concat(what, ": the NCCL communicator was aborted (", abortWhy_, ")"));
}

template <typename Fn>
void Comm::run(const char* what, Deadline deadline, Fn&& fn) {
  std::shared_lock<std::shared_mutex> use(useMu_);
  throwIfAborted(what);
  settle(fn(), what, deadline);
}

void Comm::allReduce(const void* send, void* recv, size_t count, DType dt, ReduceOp op, Stream s,
                     Deadline deadline) {
  const ncclRedOp_t nop = checkedOp(dt, op);
  const ncclDataType_t type = dataType(dt, count).first;
  const size_t n = dataType(dt, count).second;
  run("ncclAllReduce", deadline, [&] {
    return lib().allReduce(send, recv, n, type, nop, raw(comm_), static_cast<cudaStream_t>(s));
  });
}

void Comm::reduce(const void* send, void* recv, size_t count, DType dt, ReduceOp op, int root,
                  Stream s, Deadline deadline) {
  const ncclRedOp_t nop = checkedOp(dt, op);
  const ncclDataType_t type = dataType(dt, count).first;
  const size_t n = dataType(dt, count).second;
  run("ncclReduce", deadline, [&] {
    return lib().reduce(send, recv, n, type, nop, root, raw(comm_), static_cast<cudaStream_t>(s));
  });
}

void Comm::broadcast(const void* send, void* recv, size_t count, DType dt, int root, Stream s,
                     Deadline deadline) {
  const ncclDataType_t type = dataType(dt, count).first;
  const size_t n = dataType(dt, count).second;
  run("ncclBroadcast", deadline, [&] {
    return lib().broadcast(send, recv, n, type, root, raw(comm_), static_cast<cudaStream_t>(s));
  });
}

void Comm::allGather(const void* send, void* recv, size_t sendCount, DType dt, Stream s,
                     Deadline deadline) {
  const ncclDataType_t type = dataType(dt, sendCount).first;
  const size_t n = dataType(dt, sendCount).second;
  run("ncclAllGather", deadline, [&] {
    return lib().allGather(send, recv, n, type, raw(comm_), static_cast<cudaStream_t>(s));
  });
}

void Comm::reduceScatter(const void* send, void* recv, size_t recvCount, DType dt, ReduceOp op,
                         Stream s, Deadline deadline) {
  const ncclRedOp_t nop = checkedOp(dt, op);
  const ncclDataType_t type = dataType(dt, recvCount).first;
  const size_t n = dataType(dt, recvCount).second;
  run("ncclReduceScatter", deadline, [&] {
    return lib().reduceScatter(send, recv, n, type, nop, raw(comm_), static_cast<cudaStream_t>(s));
  });
}

void Comm::send(const void* buf, size_t bytes, int peer, Stream s, Deadline deadline) {
  run("ncclSend", deadline, [&] {
    return lib().send(buf, bytes, ncclUint8, peer, raw(comm_), static_cast<cudaStream_t>(s));
  });
}

void Comm::recv(void* buf, size_t bytes, int peer, Stream s, Deadline deadline) {
  run("ncclRecv", deadline, [&] {
    return lib().recv(buf, bytes, ncclUint8, peer, raw(comm_), static_cast<cudaStream_t>(s));
  });
}

void Comm::groupStart() {
  const ncclResult_t r = lib().groupStart();
  DISTX_CHECK(r == ncclSuccess, TransportError, "ncclGroupStart: ", lib().getErrorString(r));
}

void Comm::groupEnd(Deadline deadline) {
  run("ncclGroupEnd", deadline, [&] { return lib().groupEnd(); });
}

void Comm::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(abortMu_);
    if (aborted()) return;
    abortWhy_ = why;
    aborted_.store(true, std::memory_order_release);
  }
  // In-flight calls see the flag and leave; then nothing uses comm_ any more.
  std::unique_lock<std::shared_mutex> exclusive(useMu_);
  lib().commAbort(raw(comm_));
}

std::string Comm::asyncError() {
  std::shared_lock<std::shared_mutex> use(useMu_);
  if (aborted()) {
    std::lock_guard<std::mutex> lock(abortMu_);
    return "the NCCL communicator was aborted (" + abortWhy_ + ")";
  }
  ncclResult_t r = ncclSuccess;
  lib().commGetAsyncError(raw(comm_), &r);
  if (r == ncclSuccess || r == ncclInProgress) return "";
  return errorText(r, raw(comm_));
}

}  // namespace distx::nccl
