// Bootstrap over the c10d::Store torch hands the backend (already a
// PrefixStore scoped to this process group).
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "transport/transport.h"

namespace distx {

class StoreBootstrap final : public Bootstrap {
 public:
  explicit StoreBootstrap(c10::intrusive_ptr<c10d::Store> store) : store_(std::move(store)) {}
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    store_->set(key, value);
  }
  std::vector<uint8_t> get(const std::string& key) override { return store_->get(key); }
  int64_t add(const std::string& key, int64_t delta) override { return store_->add(key, delta); }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

}  // namespace distx
