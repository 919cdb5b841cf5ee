// One RAII owner per UCX handle. A worker holds a shared_ptr to its context,
// so the context always outlives it. Every ucs_status_t failure becomes a
// TransportError carrying the call and UCX's own status string.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace distx::ucx {

inline void check(ucs_status_t st, const char* call) {
  if (st != UCS_OK) throw TransportError(std::string(call) + " failed: " + ucs_status_string(st));
}

class Context {
 public:
  // `overrides`: UCX configuration (name without UCX_, value) applied where
  // the user's environment does not set that variable itself.
  explicit Context(int estimatedEndpoints,
                   const std::vector<std::pair<std::string, std::string>>& overrides = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ucp_context_h get() const { return ctx_; }

 private:
  ucp_context_h ctx_ = nullptr;
};

class Worker {
 public:
  explicit Worker(std::shared_ptr<Context> ctx);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ucp_worker_h get() const { return worker_; }
  std::string address() const;  // packed worker address, for the bootstrap exchange

 private:
  std::shared_ptr<Context> ctx_;
  ucp_worker_h worker_ = nullptr;
};

}  // namespace distx::ucx
