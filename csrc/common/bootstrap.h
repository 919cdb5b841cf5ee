// Out-of-band key/value exchange used at start-up and shutdown: the backend
// implements it over the c10d::Store that torch passes in (StoreBootstrap),
// the tests over a map. Topology discovery, the transports' address exchange
// and the liveness ring all go through it, so it sits below all of them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace distx {

class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  virtual void set(const std::string& key, const std::vector<uint8_t>& value) = 0;
  virtual std::vector<uint8_t> get(const std::string& key) = 0;  // blocks up to the store timeout
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
};

}  // namespace distx
