// Runs P ranks as P threads over the in-memory transport.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "algorithms/algorithm.h"
#include "transport/local/local_transport.h"

namespace distx::testing {

struct Rank {
  int rank;
  int size;
  LocalTransport& transport;
  CollectiveContext ctx(uint32_t seq, std::chrono::milliseconds timeout = std::chrono::seconds(30),
                        size_t chunkBytes = 4096) {
    CollectiveContext c{transport};
    c.seq = seq;
    c.deadline = Clock::now() + timeout;
    c.chunkBytes = chunkBytes;
    return c;
  }
};

// Runs fn on every rank; rethrows the first exception; returns per-rank bytes sent.
inline std::vector<uint64_t> runRanks(int P, const std::function<void(Rank&)>& fn,
                                      std::shared_ptr<LocalFabric> fabric = nullptr) {
  if (!fabric) fabric = std::make_shared<LocalFabric>(P);
  std::vector<std::unique_ptr<LocalTransport>> transports;
  for (int r = 0; r < P; ++r)
    transports.push_back(fabric->transport(r));
  std::vector<std::exception_ptr> errors(P);
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      try {
        Rank rk{r, P, *transports[r]};
        fn(rk);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  std::vector<uint64_t> bytes;
  for (auto& t : transports)
    bytes.push_back(t->bytesSent());
  return bytes;
}

}  // namespace distx::testing
