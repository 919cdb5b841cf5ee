#include "transport/ucx/ucx_handles.h"

#include <cstdlib>

#include "common/tag.h"

namespace distx::ucx {

Context::Context(int estimatedEndpoints,
                 const std::vector<std::pair<std::string, std::string>>& overrides) {
  ucp_config_t* cfg = nullptr;
  check(ucp_config_read(nullptr, nullptr, &cfg), "ucp_config_read");
  for (const auto& [name, value] : overrides) {
    if (std::getenv(("UCX_" + name).c_str())) continue;  // the user's setting wins
    const ucs_status_t st = ucp_config_modify(cfg, name.c_str(), value.c_str());
    if (st != UCS_OK) {
      ucp_config_release(cfg);
      check(st, "ucp_config_modify");
    }
  }
  ucp_params_t p{};
  p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_TAG_SENDER_MASK |
                 UCP_PARAM_FIELD_ESTIMATED_NUM_EPS | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  p.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  p.tag_sender_mask = tag::kSrcMask;
  p.estimated_num_eps = static_cast<size_t>(estimatedEndpoints);
  p.mt_workers_shared = 0;
  const ucs_status_t st = ucp_init(&p, cfg, &ctx_);
  ucp_config_release(cfg);
  check(st, "ucp_init");
}

Context::~Context() {
  if (ctx_) ucp_cleanup(ctx_);
}

Worker::Worker(std::shared_ptr<Context> ctx) : ctx_(std::move(ctx)) {
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_MULTI;
  check(ucp_worker_create(ctx_->get(), &wp, &worker_), "ucp_worker_create");
  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_THREAD_MODE;
  check(ucp_worker_query(worker_, &attr), "ucp_worker_query");
  if (attr.thread_mode != UCS_THREAD_MODE_MULTI) {
    ucp_worker_destroy(worker_);
    worker_ = nullptr;
    throw TransportError(
        "this UCX was built without multi-thread support (--enable-mt); distx needs a MULTI "
        "worker");
  }
}

Worker::~Worker() {
  if (worker_) ucp_worker_destroy(worker_);
}

std::string Worker::address() const {
  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
  check(ucp_worker_query(worker_, &attr), "ucp_worker_query(address)");
  std::string out(reinterpret_cast<const char*>(attr.address), attr.address_length);
  ucp_worker_release_address(worker_, attr.address);
  return out;
}

}  // namespace distx::ucx
