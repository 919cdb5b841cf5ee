// Runs P ranks as P threads over the in-memory transport, in either of its
// protocols (eager or rendezvous, see local_transport.h). Algorithm tests
// derive from RanksTest and instantiate with bothProtocols(): every case then
// runs once with sends that complete at once and once with sends that
// complete only when matched, as UCX's rendezvous does for large messages.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
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

// The protocol runRanks() gives a fabric it creates (RanksTest sets it per case).
inline LocalProtocol& harnessProtocol() {
  static LocalProtocol protocol = LocalProtocol::kEager;
  return protocol;
}

// Runs fn on every rank; rethrows the first exception; returns per-rank bytes sent.
inline std::vector<uint64_t> runRanks(int P, const std::function<void(Rank&)>& fn,
                                      std::shared_ptr<LocalFabric> fabric = nullptr) {
  if (!fabric) fabric = std::make_shared<LocalFabric>(P, harnessProtocol());
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

using RanksParam = std::tuple<int, LocalProtocol>;

// A test over P thread ranks in one protocol: ranks() is P; runRanks() inside
// the test uses the protocol.
class RanksTest : public ::testing::TestWithParam<RanksParam> {
 protected:
  void SetUp() override { harnessProtocol() = std::get<1>(GetParam()); }
  void TearDown() override { harnessProtocol() = LocalProtocol::kEager; }
  int ranks() const { return std::get<0>(GetParam()); }
  LocalProtocol protocol() const { return std::get<1>(GetParam()); }
};

// The element counts a P-rank test covers: 0, 1, P-1 (2 for one rank), P+1
// and two primes.
inline std::vector<size_t> countsFor(int P) {
  return {0, 1, static_cast<size_t>(P > 1 ? P - 1 : 2), static_cast<size_t>(P + 1), 13, 1031};
}

// P in [lo, hi) x {eager, rendezvous}, named e.g. "P3_rendezvous".
inline auto bothProtocols(int lo = 1, int hi = 9) {
  return ::testing::Combine(::testing::Range(lo, hi),
                            ::testing::Values(LocalProtocol::kEager, LocalProtocol::kRendezvous));
}
inline std::string ranksParamName(const ::testing::TestParamInfo<RanksParam>& info) {
  return "P" + std::to_string(std::get<0>(info.param)) + "_" +
         localProtocolName(std::get<1>(info.param));
}

}  // namespace distx::testing
