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
std::atomic<int> gLive{0};

}  // namespace

std::shared_ptr<Runtime> Runtime::acquire(const std::string& key) {
  std::lock_guard<std::mutex> lock(gMu);
  if (auto rt = gRuntimes[key].lock()) return rt;
  std::shared_ptr<Runtime> rt(new Runtime());
  gRuntimes[key] = rt;
  return rt;
}

int Runtime::liveCount() {
  return gLive.load();
}

Runtime::Runtime() {
  context_ = std::make_shared<Context>(/*estimatedEndpoints=*/16);
  worker_ = std::make_unique<Worker>(context_);
  address_ = worker_->address();
  int efd = -1;
  check(ucp_worker_get_efd(worker_->get(), &efd), "ucp_worker_get_efd");
  epollFd_ = epoll_create1(EPOLL_CLOEXEC);
  DISTX_CHECK(epollFd_ >= 0, TransportError, "epoll_create1 failed");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = efd;
  if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, efd, &ev) != 0) {
    close(epollFd_);
    throw TransportError("epoll_ctl failed");
  }
  progressThread_ = std::thread([this] { progressLoop(); });
  gLive.fetch_add(1);
}

Runtime::~Runtime() {
  stop_.store(true, std::memory_order_release);
  ucp_worker_signal(worker_->get());
  progressThread_.join();
  close(epollFd_);

  // Flush-close every endpoint, progressing here (the thread is gone). An
  // endpoint whose flush cannot finish (a dead peer with sends in flight) is
  // left open, and then so are the worker and context: destroying them would
  // make UCX walk the half-done protocol state. The process usually exits next.
  std::vector<void*> closing;
  for (auto& [addr, ep] : endpoints_) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = 0;  // flush, then close
    void* r = ucp_ep_close_nbx(ep, &p);
    if (r && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
  }
  endpoints_.clear();
  const auto deadline = Clock::now() + kCloseDeadline;
  bool stuck = false;
  for (void* r : closing) {
    while (ucp_request_check_status(r) == UCS_INPROGRESS && Clock::now() < deadline)
      ucp_worker_progress(worker_->get());
    if (ucp_request_check_status(r) == UCS_INPROGRESS) {
      stuck = true;
    } else {
      ucp_request_free(r);
    }
  }
  gLive.fetch_sub(1);
  if (stuck) {
    DISTX_LOG(LogLevel::kInfo, "[distx ucx]",
              "an endpoint did not flush in time (dead peer); leaving the UCX worker to exit");
    (void)worker_.release();
    new std::shared_ptr<Context>(std::move(context_));
    return;
  }
  worker_.reset();
  context_.reset();
}

ucp_ep_h Runtime::endpoint(const std::string& remoteAddress) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = endpoints_.find(remoteAddress);
  if (it != endpoints_.end()) return it->second;
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  ep.address = reinterpret_cast<const ucp_address_t*>(remoteAddress.data());
  ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  ucp_ep_h h = nullptr;
  check(ucp_ep_create(worker_->get(), &ep, &h), "ucp_ep_create");
  endpoints_.emplace(remoteAddress, h);
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
  ucp_worker_h w = worker_->get();
  epoll_event ev{};
  while (!stop_.load(std::memory_order_acquire)) {
    if (spinners_.load(std::memory_order_acquire) > 0) {
      // A waiter is progressing; stay out of its way.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    while (ucp_worker_progress(w) > 0) {
    }
    const ucs_status_t st = ucp_worker_arm(w);
    if (st == UCS_ERR_BUSY) continue;
    if (st != UCS_OK) {
      DISTX_LOG(LogLevel::kError, "[distx progress]",
                "ucp_worker_arm failed: ", ucs_status_string(st));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    epoll_wait(epollFd_, &ev, 1, kEpollTimeoutMs);
  }
}

}  // namespace distx::ucx
