#include "transport/ucx/ucx_runtime.h"

#include <sys/epoll.h>

#include <pthread.h>
#include <unistd.h>

#include <chrono>

#include "common/logging.h"

namespace distx::ucx {
namespace {

constexpr int kEpollTimeoutMs = 50;
// Closing the endpoints when the last group goes: flush for at most this long.
constexpr auto kCloseDeadline = std::chrono::seconds(2);

std::mutex gMu;
std::map<std::string, std::weak_ptr<Runtime>> gRuntimes;  // guarded by gMu

}  // namespace

std::shared_ptr<Runtime> Runtime::acquire(const std::string& key) {
  std::lock_guard<std::mutex> lock(gMu);
  if (auto rt = gRuntimes[key].lock()) return rt;
  std::shared_ptr<Runtime> rt(new Runtime());
  gRuntimes[key] = rt;
  return rt;
}

namespace {

// Note [Network worker]: the net context's settings.
const std::vector<std::pair<std::string, std::string>> kNetOverrides = {
    {"RNDV_THRESH", "4m"},  // above DISTX_CHUNK_BYTES' default: chunks go eagerly
    {"TLS", "^sm"},         // a peer on another host is never reached by shm/CMA
};

void addToEpoll(int epollFd, ucp_worker_h w) {
  int efd = -1;
  check(ucp_worker_get_efd(w, &efd), "ucp_worker_get_efd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = efd;
  DISTX_CHECK(epoll_ctl(epollFd, EPOLL_CTL_ADD, efd, &ev) == 0, TransportError, "epoll_ctl failed");
}

}  // namespace

Runtime::Runtime() {
  local_.context = std::make_shared<Context>(/*estimatedEndpoints=*/16);
  local_.worker = std::make_unique<Worker>(local_.context);
  local_.address = local_.worker->address();
  net_.context = std::make_shared<Context>(/*estimatedEndpoints=*/16, kNetOverrides);
  net_.worker = std::make_unique<Worker>(net_.context);
  net_.address = net_.worker->address();
  epollFd_ = epoll_create1(EPOLL_CLOEXEC);
  DISTX_CHECK(epollFd_ >= 0, TransportError, "epoll_create1 failed");
  try {
    addToEpoll(epollFd_, local_.worker->get());
    addToEpoll(epollFd_, net_.worker->get());
  } catch (...) {
    close(epollFd_);
    throw;
  }
  progressThread_ = std::thread([this] { progressLoop(); });
}

bool Runtime::closeEndpoints(Side& side) {
  // Flush-close every endpoint, progressing here (the thread is gone).
  std::vector<void*> closing;
  for (auto& [addr, ep] : side.endpoints) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = 0;  // flush, then close
    void* r = ucp_ep_close_nbx(ep, &p);
    if (r && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
  }
  side.endpoints.clear();
  const auto deadline = Clock::now() + kCloseDeadline;
  bool stuck = false;
  for (void* r : closing) {
    while (ucp_request_check_status(r) == UCS_INPROGRESS && Clock::now() < deadline)
      ucp_worker_progress(side.worker->get());
    if (ucp_request_check_status(r) == UCS_INPROGRESS) {
      stuck = true;
    } else {
      ucp_request_free(r);
    }
  }
  return !stuck;
}

Runtime::~Runtime() {
  stop_.store(true, std::memory_order_release);
  ucp_worker_signal(local_.worker->get());
  progressThread_.join();
  close(epollFd_);

  // An endpoint whose flush cannot finish (a dead peer with sends in flight)
  // is left open, and then so are the worker and context: destroying them
  // would make UCX walk the half-done protocol state. The process usually
  // exits next.
  for (Side* side : {&local_, &net_}) {
    if (closeEndpoints(*side)) {
      side->worker.reset();
      side->context.reset();
      continue;
    }
    DISTX_LOG(LogLevel::kInfo, "[distx ucx]",
              "an endpoint did not flush in time (dead peer); leaving the UCX worker to exit");
    (void)side->worker.release();
    new std::shared_ptr<Context>(std::move(side->context));
  }
}

unsigned Runtime::progress() {
  return ucp_worker_progress(local_.worker->get()) + ucp_worker_progress(net_.worker->get());
}

ucp_ep_h Runtime::endpoint(bool net, const std::string& remoteAddress) {
  std::lock_guard<std::mutex> lock(mu_);
  Side& s = side(net);
  auto it = s.endpoints.find(remoteAddress);
  if (it != s.endpoints.end()) return it->second;
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  ep.address = reinterpret_cast<const ucp_address_t*>(remoteAddress.data());
  ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  ucp_ep_h h = nullptr;
  check(ucp_ep_create(s.worker->get(), &ep, &h), "ucp_ep_create");
  s.endpoints.emplace(remoteAddress, h);
  return h;
}

std::vector<uint32_t> Runtime::usedGroupIds() {
  std::lock_guard<std::mutex> lock(mu_);
  return {usedIds_.begin(), usedIds_.end()};
}

uint32_t Runtime::nextGroupId() {
  std::lock_guard<std::mutex> lock(mu_);
  return nextId_;
}

void Runtime::reserveGroupId(uint32_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  usedIds_.insert(id);
  nextId_ = id + 1;
}

void Runtime::releaseGroupId(uint32_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  usedIds_.erase(id);
}

void Runtime::progressLoop() {
  pthread_setname_np(pthread_self(), "distx-progress");
  ucp_worker_h workers[2] = {local_.worker->get(), net_.worker->get()};
  epoll_event ev[2]{};
  while (!stop_.load(std::memory_order_acquire)) {
    if (spinners_.load(std::memory_order_acquire) > 0) {
      // A waiter is progressing; stay out of its way.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    while (progress() > 0) {
    }
    // Sleep only when both workers are armed (nothing left to progress).
    ucs_status_t st = UCS_OK;
    for (ucp_worker_h w : workers) {
      st = ucp_worker_arm(w);
      if (st != UCS_OK) break;
    }
    if (st == UCS_ERR_BUSY) continue;
    if (st != UCS_OK) {
      DISTX_LOG(LogLevel::kError, "[distx progress]",
                "ucp_worker_arm failed: ", ucs_status_string(st));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    epoll_wait(epollFd_, ev, 2, kEpollTimeoutMs);
  }
}

}  // namespace distx::ucx
