// Bootstrap over the c10d::Store torch hands the backend (already a
// PrefixStore scoped to this process group).
//
// Note [Store incarnations]
// torch names groups by a counter that destroy_process_group() resets, and
// torchrun's static rendezvous keeps one store across restart attempts, so a
// group re-created on the same store gets the same key prefix as the group
// before it. Every key distx writes (UCX addresses, liveness addresses,
// teardown barrier counts) would then be read back from the previous
// incarnation: ucp_ep_create on a dead process's address fails with
// "Shared memory error", and the teardown counters are already full.
//
// So every key lives under "distx/<g>/", g an incarnation number that group
// rank 0 (the leader) takes from the counter "distx/generation" and announces
// as "distx/current". Counting arrivals would not do: a rank that dies before
// it counts itself (torchrun restarts after exactly that) would leave every
// later incarnation split. Instead each other rank r joins with a random
// nonce: it reads g from "distx/current", writes the nonce to
// "distx/<g>/join/<r>" and waits until the leader echoes it back in
// "distx/<g>/ack/<r>". A g read from a dead incarnation (its leader gone, or
// its ack carrying an older nonce) is never acknowledged; the rank follows
// "distx/current" to the new leader's g and joins again. Only the leader
// waits on the others, with the store's own timeout; the others poll until
// the init deadline. TORCHELASTIC_RESTART_COUNT is deliberately not used:
// each torchrun agent counts its own restarts, so nodes that joined at
// different times would disagree.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "common/error.h"
#include "transport/transport.h"

namespace distx {

class StoreBootstrap final : public Bootstrap {
 public:
  // Joins the current incarnation of the group (Note [Store incarnations]).
  StoreBootstrap(c10::intrusive_ptr<c10d::Store> store, int rank, int size, Deadline deadline)
      : store_(std::move(store)) {
    incarnation_ = rank == 0 ? lead(size) : join(rank, deadline);
    prefix_ = "distx/" + std::to_string(incarnation_) + "/";
  }
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    store_->set(prefix_ + key, value);
  }
  std::vector<uint8_t> get(const std::string& key) override { return store_->get(prefix_ + key); }
  int64_t add(const std::string& key, int64_t delta) override {
    return store_->add(prefix_ + key, delta);
  }
  int64_t incarnation() const { return incarnation_; }

 private:
  static std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
  static std::string text(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }
  static std::string key(int64_t g, const char* what, int rank) {
    return "distx/" + std::to_string(g) + "/" + what + "/" + std::to_string(rank);
  }

  int64_t lead(int size) {
    const int64_t g = store_->add("distx/generation", 1);
    store_->set("distx/current", bytes(std::to_string(g)));
    for (int r = 1; r < size; ++r)
      store_->set(key(g, "ack", r), store_->get(key(g, "join", r)));
    return g;
  }

  int64_t join(int rank, Deadline deadline) {
    std::random_device rd;
    const std::string nonce = std::to_string(rd()) + "-" + std::to_string(rd()) + "-" +
                              std::to_string(Clock::now().time_since_epoch().count());
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
      const int64_t g = std::stoll(text(store_->get("distx/current")));
      store_->set(key(g, "join", rank), bytes(nonce));
      const std::string ack = key(g, "ack", rank);
      for (;;) {
        if (store_->check({ack}) && text(store_->get(ack)) == nonce) return g;
        if (std::stoll(text(store_->get("distx/current"))) != g) break;  // a newer leader
        DISTX_CHECK(Clock::now() < deadline, Timeout, "rank 0 of the group did not let rank ", rank,
                    " join (Note [Store incarnations])");
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(20));
      }
    }
  }

  c10::intrusive_ptr<c10d::Store> store_;
  int64_t incarnation_ = 0;
  std::string prefix_;
};

}  // namespace distx
