// CudaBackend: communicators, streams, launch and the watchdog (Note [CUDA path]).
#include "backend/cuda/cuda_backend.hpp"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "backend/work.hpp"
#include "common/logging.h"

namespace distx {
namespace {

// How often the watchdog polls the done events of pending ops.
constexpr auto kWatchdogPoll = std::chrono::milliseconds(2);

std::exception_ptr distError(const std::string& msg) {
  return std::make_exception_ptr(
      c10::DistBackendError({__func__, __FILE__, static_cast<uint32_t>(__LINE__)}, msg));
}

}  // namespace

c10::Device commonCudaDevice(const std::vector<at::Tensor>& ts, const char* op) {
  std::optional<c10::Device> device;
  for (const auto& t : ts) {
    checkTensor(t, op);
    TORCH_CHECK_VALUE(t.device().is_cuda(), "distx ", op, ": expected CUDA tensors, got one on ",
                      t.device());
    if (!device) device = t.device();
    TORCH_CHECK_VALUE(t.device() == *device, "distx ", op,
                      ": all tensors of one call must be on one CUDA device, got ", *device,
                      " and ", t.device());
  }
  TORCH_CHECK_VALUE(device.has_value(), "distx ", op, ": got no tensors");
  return *device;
}

CudaBackend::CudaBackend(CudaBackendDeps deps)
    : c10d::Backend(deps.rank, deps.size), deps_(std::move(deps)) {
  watchdog_ = std::thread([this] { watchdogLoop(); });
}

CudaBackend::~CudaBackend() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  // Communicators finalize in ~Comm (bounded; aborted if a peer is gone).
}

std::string CudaBackend::prefix(const char* opName, uint64_t seq) const {
  return detail::concat("[distx rank ", rank_, "/", size_, " pg ", deps_.groupName, " ", opName,
                        " seq ", seq, " cuda]");
}

CudaBackend::DeviceState& CudaBackend::deviceState(c10::Device device, Deadline deadline,
                                                   bool withComm) {
  std::lock_guard<std::mutex> lock(commMu_);
  auto it = devices_.find(device.index());
  if (it == devices_.end()) {
    DeviceState fresh{c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index()),
                      nullptr};
    it = devices_.emplace(device.index(), std::move(fresh)).first;
  }
  DeviceState& st = it->second;
  if (!withComm || st.comm) return st;
  // Note [NCCL bootstrap]. With several hosts the communicator spans this
  // rank's host only (Note [Multi-host CUDA]).
  const bool perHost = multiHost();
  const int commRank = perHost ? deps_.localRank : rank_;
  const int commSize = perHost ? deps_.localSize : size_;
  std::string key = "nccl_id/" + std::to_string(commsCreated_++);
  if (perHost) key += "/node" + std::to_string(deps_.node);
  nccl::UniqueId id;
  if (commRank == 0) {
    id = nccl::makeUniqueId();
    deps_.store->set(key, std::vector<uint8_t>(id.bytes.begin(), id.bytes.end()));
  } else {
    const auto got = deps_.store->get(key);
    TORCH_CHECK(got.size() == id.bytes.size(), "distx: bad NCCL id under ", key);
    std::copy(got.begin(), got.end(), id.bytes.begin());
  }
  const c10::cuda::CUDAGuard guard(device);
  st.comm = nccl::Comm::create(commSize, commRank, id, deadline);
  DISTX_LOG(LogLevel::kInfo, prefix("init", 0), "NCCL ", nccl::version(), " from ",
            nccl::loadedLibraryPath(), " on ", device, ": rank ", commRank, " of ", commSize);
  return st;
}

c10::Device CudaBackend::checkCall(const char* opName, const std::vector<at::Tensor>& inputs,
                                   const std::vector<at::Tensor>& outputs) {
  std::vector<at::Tensor> all = inputs;
  all.insert(all.end(), outputs.begin(), outputs.end());
  const c10::Device device = commonCudaDevice(all, opName);
  std::lock_guard<std::mutex> lock(mu_);
  checkUsable(opName, stopping_, broken_);
  return device;
}

c10::intrusive_ptr<WorkCuda> CudaBackend::launch(c10d::OpType type, const char* opName,
                                                 std::chrono::milliseconds timeout,
                                                 const std::vector<at::Tensor>& inputs,
                                                 const std::vector<at::Tensor>& outputs,
                                                 const Body& body) {
  const c10::Device device = checkCall(opName, inputs, outputs);
  const uint64_t seq = deps_.nextSeq();
  const std::chrono::milliseconds limit =
      timeout == c10d::kUnsetTimeout ? deps_.timeout() : timeout;
  const Deadline deadline = Clock::now() + limit;
  const std::string where = prefix(opName, seq);

  const c10::cuda::CUDAGuard guard(device);
  DeviceState* st = nullptr;
  try {
    st = &deviceState(device, deadline);
  } catch (const Error& e) {
    C10_THROW_ERROR(DistBackendError, where + " NCCL communicator: " + e.what());
  }
  // 3. ordered after the caller's stream
  at::cuda::CUDAEvent ready;
  ready.record(c10::cuda::getCurrentCUDAStream(device.index()));
  ready.block(st->stream);
  // 4. the allocator must not reuse these before the internal stream is done
  for (const auto* list : {&inputs, &outputs}) {
    for (const auto& t : *list) {
      if (t.storage().data_ptr().get() != nullptr)
        c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), st->stream);
    }
  }
  auto work = c10::make_intrusive<WorkCuda>(rank_, type, seq, profilingTitle(opName), outputs,
                                            inputs, device);
  {
    // 5. enqueue with the internal stream current: staging buffers the body
    // allocates belong to it, and the Future's event is recorded on it.
    const c10::cuda::CUDAStreamGuard streamGuard(st->stream);
    try {
      body(*st->comm, st->stream.stream(), deadline);
    } catch (const Timeout& e) {
      breakGroup(where + " " + e.what() + " after " + std::to_string(limit.count()) + " ms");
      C10_THROW_ERROR(DistBackendError, where + " " + e.what());
    } catch (const Unsupported& e) {
      C10_THROW_ERROR(TypeError, where + " " + e.what());
    } catch (const Error& e) {
      C10_THROW_ERROR(DistBackendError, where + " " + e.what());
    }
    work->markEnqueued();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({work, deadline, opName, seq, limit});
  }
  cv_.notify_one();
  return work;
}

void CudaBackend::breakGroup(const std::string& reason) {
  std::deque<Pending> failed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.empty()) broken_ = reason;
    failed.swap(pending_);
  }
  DISTX_LOG(LogLevel::kError, prefix("watchdog", 0), reason, "; aborting the NCCL communicators");
  {
    std::lock_guard<std::mutex> lock(commMu_);
    for (auto& [dev, st] : devices_)
      if (st.comm) st.comm->abort(reason);
  }
  for (auto& p : failed) {
    p.work->fail(distError(prefix(p.opName, p.seq) + " failed: " + reason));
  }
}

void CudaBackend::watchdogLoop() {
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, kWatchdogPoll, [&] { return stopping_ || !pending_.empty(); });
    if (stopping_) return;
    // Drop what finished, oldest first; ops on one stream finish in order.
    while (!pending_.empty() && pending_.front().work->eventDone())
      pending_.pop_front();
    if (pending_.empty()) continue;
    const Pending& oldest = pending_.front();
    std::string reason;
    if (Clock::now() >= oldest.deadline) {
      reason = detail::concat(prefix(oldest.opName, oldest.seq), " timed out after ",
                              oldest.timeout.count(),
                              " ms in NCCL (a peer never joined this collective, is slow, or "
                              "died)");
    }
    lock.unlock();
    if (reason.empty()) {
      std::lock_guard<std::mutex> commLock(commMu_);
      for (auto& [dev, st] : devices_) {
        if (!st.comm) continue;
        const std::string err = st.comm->asyncError();
        if (!err.empty()) {
          reason = "NCCL error on cuda:" + std::to_string(dev) + ": " + err;
          break;
        }
      }
    }
    if (!reason.empty()) breakGroup(reason);
  }
}

void CudaBackend::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
  }
  // Let enqueued work finish (bounded by its deadline through the watchdog).
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_);
    if (pending_.empty() || !broken_.empty()) break;
    lock.unlock();
    std::this_thread::sleep_for(kWatchdogPoll);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  std::lock_guard<std::mutex> lock(commMu_);
  devices_.clear();  // ~Comm finalizes
}

void CudaBackend::abort() {
  breakGroup("the process group was aborted");
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
}

c10::intrusive_ptr<c10d::Backend> makeCudaBackend(CudaBackendDeps deps) {
  return c10::make_intrusive<CudaBackend>(std::move(deps));
}

}  // namespace distx
