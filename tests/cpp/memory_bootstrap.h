// The c10d store's role, in memory, for ranks as threads of one process
// (test_topology.cpp, ucx/test_ucx_loopback.cpp): get() blocks until the key is
// set, and throws Timeout after 30 s instead of hanging the test.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/bootstrap.h"
#include "common/error.h"

namespace distx::testing {

class MemoryBootstrap final : public Bootstrap {
 public:
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    std::lock_guard<std::mutex> lock(mu_);
    kv_[key] = value;
    cv_.notify_all();
  }
  std::vector<uint8_t> get(const std::string& key) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return kv_.count(key) > 0; }))
      throw Timeout("bootstrap key " + key + " never set");
    return kv_[key];
  }
  int64_t add(const std::string& key, int64_t delta) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto& v = counters_[key];
    v += delta;
    return v;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<uint8_t>> kv_;
  std::map<std::string, int64_t> counters_;
};

}  // namespace distx::testing
