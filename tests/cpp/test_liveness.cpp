// LivenessRing set-up (Note [Liveness ring]): bounded against stray
// connections, no descriptor leaked when it fails, one watcher thread for
// every ring of the process. Ranks are threads; the bootstrap is a map.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "transport/liveness.h"

namespace distx {
namespace {

// An in-memory Bootstrap; get() waits up to `wait` for the key, then throws.
class MapBootstrap final : public Bootstrap {
 public:
  explicit MapBootstrap(std::chrono::milliseconds wait = std::chrono::seconds(10)) : wait_(wait) {}
  std::function<void(const std::string&, const std::string&)> onSet;  // called before set returns
  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      map_[key] = value;
    }
    cv_.notify_all();
    if (onSet) onSet(key, std::string(value.begin(), value.end()));
  }
  std::vector<uint8_t> get(const std::string& key) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, wait_, [&] { return map_.count(key) > 0; }))
      throw Timeout("bootstrap: no key " + key);
    return map_[key];
  }
  int64_t add(const std::string&, int64_t) override { return 0; }

 private:
  std::chrono::milliseconds wait_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<uint8_t>> map_;
};

int openFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d))
    ++n;
  closedir(d);
  return n;
}

int portOf(const std::string& entry) {
  return std::stoi(entry.substr(entry.rfind('|') + 1));
}

// Builds one ring per rank, each on its own thread; returns the errors.
std::vector<std::string> buildRings(int P, MapBootstrap& boot, std::chrono::milliseconds deadline,
                                    std::vector<std::unique_ptr<LivenessRing>>& rings) {
  rings.resize(P);
  std::vector<std::string> errors(P);
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      try {
        rings[r] = std::make_unique<LivenessRing>(r, P, boot, Clock::now() + deadline,
                                                  [](int, const std::string&) {});
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  return errors;
}

TEST(Liveness, SilentStrayConnectionDoesNotStallSetup) {
  // A stray client connects to rank 1's listener before rank 0 does and never
  // says anything. Set-up must still finish within the deadline (it used to
  // block in recv() on the stray until it closed).
  MapBootstrap boot;
  int stray = -1;
  boot.onSet = [&](const std::string& key, const std::string& value) {
    if (key != "live_addr/1") return;
    stray = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(portOf(value)));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(stray, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  };
  std::atomic<bool> done{false};
  std::thread closer([&] {  // unblocks the old code eventually, past the deadline
    for (int i = 0; i < 60 && !done; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (stray >= 0) shutdown(stray, SHUT_RDWR);
  });
  std::vector<std::unique_ptr<LivenessRing>> rings;
  const auto errors = buildRings(2, boot, std::chrono::seconds(3), rings);
  done = true;
  closer.join();
  if (stray >= 0) close(stray);
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(Liveness, FailedSetupClosesEveryDescriptor) {
  const int before = openFds();
  MapBootstrap boot(std::chrono::milliseconds(300));  // rank 1 never publishes
  EXPECT_THROW(LivenessRing(0, 2, boot, Clock::now() + std::chrono::seconds(1),
                            [](int, const std::string&) {}),
               Error);
  EXPECT_EQ(openFds(), before);
}

TEST(Liveness, RingsOfAProcessShareOneWatcherThread) {
  MapBootstrap boot;
  std::vector<std::unique_ptr<LivenessRing>> rings;
  const auto errors = buildRings(4, boot, std::chrono::seconds(10), rings);
  for (int r = 0; r < 4; ++r)
    ASSERT_EQ(errors[r], "") << "rank " << r;
  // Four rings (8 sockets) in this process, one watcher.
  for (int i = 0; i < 100 && LivenessRing::watcherThreads() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(LivenessRing::watcherThreads(), 1);
  for (auto& r : rings)
    r->leave();
  rings.clear();
  for (int i = 0; i < 100 && LivenessRing::watcherThreads() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(LivenessRing::watcherThreads(), 0);
}

}  // namespace
}  // namespace distx
