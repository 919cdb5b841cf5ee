#include "transport/liveness.h"

#include <arpa/inet.h>

#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "common/error.h"

namespace distx {
namespace {

enum : uint32_t { kHello = 0x4c495645, kBye = 0x42594521, kDead = 0x44454144 };

struct Msg {
  uint32_t type;
  int32_t rank;
};

std::string hostName() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// "host|ip1,ip2,...|port": non-loopback addresses first, 127.0.0.1 last.
std::string localAddresses(int port) {
  std::vector<std::string> ips;
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) == 0) {
    for (ifaddrs* i = ifs; i; i = i->ifa_next) {
      if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP)) continue;
      if (i->ifa_flags & IFF_LOOPBACK) continue;
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, ip, sizeof ip);
      ips.push_back(ip);
    }
    freeifaddrs(ifs);
  }
  ips.push_back("127.0.0.1");
  std::ostringstream os;
  os << hostName() << "|";
  for (size_t i = 0; i < ips.size(); ++i)
    os << (i ? "," : "") << ips[i];
  os << "|" << port;
  return os.str();
}

bool writeMsg(int fd, Msg m) {
  return fd >= 0 && send(fd, &m, sizeof m, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof m);
}

int msLeft(Deadline deadline) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(ms, 0, 1 << 30));
}

// Non-blocking read (the watcher, the hello): 1 = a message, 0 = not all of it is
// here yet, -1 = EOF or error (the peer is gone).
int tryReadMsg(int fd, Msg& m) {
  const ssize_t n = recv(fd, &m, sizeof m, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return -1;
  if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
  if (static_cast<size_t>(n) < sizeof m) return 0;
  return recv(fd, &m, sizeof m, MSG_DONTWAIT) == static_cast<ssize_t>(sizeof m) ? 1 : -1;
}

int connectWithDeadline(const std::string& ip, int port, Deadline deadline) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) return -1;
  while (Clock::now() < deadline) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    const int err = errno;
    close(fd);
    if (err != ECONNREFUSED && err != EINTR && err != EAGAIN)
      return -1;  // unreachable: try next ip
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

void closeFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

std::atomic<int> gWatcherThreads{0};

}  // namespace

// The process-wide watcher (Note [Liveness ring]).
class LivenessHub {
 public:
  static std::shared_ptr<LivenessHub> acquire() {
    static std::mutex mu;
    static std::weak_ptr<LivenessHub> current;
    std::lock_guard<std::mutex> lock(mu);
    if (auto hub = current.lock()) return hub;
    std::shared_ptr<LivenessHub> hub(new LivenessHub());
    current = hub;
    return hub;
  }
  ~LivenessHub() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake();
    thread_.join();
    closeFd(wake_[0]);
    closeFd(wake_[1]);
  }
  void add(LivenessRing* ring) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      rings_.push_back(ring);
    }
    wake();
  }
  // After this returns the watcher never touches `ring` again.
  void remove(LivenessRing* ring) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      rings_.erase(std::remove(rings_.begin(), rings_.end(), ring), rings_.end());
    }
    wake();
  }

 private:
  LivenessHub() {
    DISTX_CHECK(pipe2(wake_, O_CLOEXEC | O_NONBLOCK) == 0, TransportError,
                "liveness: pipe2 failed");
    thread_ = std::thread([this] { loop(); });
  }
  void wake() {
    const char c = 1;
    (void)!write(wake_[1], &c, 1);
  }
  void loop() {
    pthread_setname_np(pthread_self(), "distx-live");
    gWatcherThreads.fetch_add(1);
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) break;
        for (LivenessRing* r : rings_) {
          if (r->leftOpen_) fds.push_back({r->leftFd_, POLLIN, 0});
          if (r->rightOpen_ && r->rightFd_ != r->leftFd_) fds.push_back({r->rightFd_, POLLIN, 0});
        }
      }
      fds.push_back({wake_[0], POLLIN, 0});
      if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
      if (fds.back().revents) {
        char buf[64];
        while (read(wake_[0], buf, sizeof buf) > 0) {
        }
      }
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i + 1 < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        // The descriptor may belong to a ring that left meanwhile (or be a
        // new one with a reused number): look it up among the current rings.
        for (LivenessRing* r : rings_) {
          if ((r->leftOpen_ && r->leftFd_ == fds[i].fd) ||
              (r->rightOpen_ && r->rightFd_ == fds[i].fd)) {
            r->onReadable(fds[i].fd);
            break;
          }
        }
      }
    }
    gWatcherThreads.fetch_sub(1);
  }

  std::mutex mu_;
  std::vector<LivenessRing*> rings_;  // guarded by mu_
  bool stop_ = false;                 // guarded by mu_
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

int LivenessRing::watcherThreads() {
  return gWatcherThreads.load();
}

LivenessRing::LivenessRing(int rank, int size, Bootstrap& bootstrap, Deadline deadline,
                           OnDeath onDeath)
    : rank_(rank), size_(size), onDeath_(std::move(onDeath)) {
  if (size_ < 2) return;
  int listenFd = -1;
  try {
    listenFd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    DISTX_CHECK(listenFd >= 0, TransportError, "liveness: socket failed: ", std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof addr;
    DISTX_CHECK(bind(listenFd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                    listen(listenFd, 16) == 0 &&
                    getsockname(listenFd, reinterpret_cast<sockaddr*>(&addr), &len) == 0,
                TransportError, "liveness: bind/listen failed: ", std::strerror(errno));
    const std::string mine = localAddresses(ntohs(addr.sin_port));
    bootstrap.set("live_addr/" + std::to_string(rank_),
                  std::vector<uint8_t>(mine.begin(), mine.end()));

    // Connect to the right neighbour (its listen backlog accepts before it calls accept()).
    const int right = (rank_ + 1) % size_;
    const auto raw = bootstrap.get("live_addr/" + std::to_string(right));
    const std::string peer(raw.begin(), raw.end());
    const size_t bar1 = peer.find('|'), bar2 = peer.rfind('|');
    DISTX_CHECK(bar1 != std::string::npos && bar2 > bar1, TransportError,
                "liveness: bad address of rank ", right, ": ", peer);
    const std::string host = peer.substr(0, bar1);
    const int port = std::stoi(peer.substr(bar2 + 1));
    std::vector<std::string> ips;
    std::stringstream list(peer.substr(bar1 + 1, bar2 - bar1 - 1));
    for (std::string ip; std::getline(list, ip, ',');)
      ips.push_back(ip);
    if (host == hostName()) ips.insert(ips.begin(), "127.0.0.1");
    for (const auto& ip : ips) {
      if ((rightFd_ = connectWithDeadline(ip, port, deadline)) >= 0) break;
    }
    DISTX_CHECK(rightFd_ >= 0, TransportError, "liveness: could not connect to rank ", right,
                " at ", peer);
    DISTX_CHECK(writeMsg(rightFd_, {kHello, rank_}), TransportError, "liveness: hello to rank ",
                right, " failed");

    // Accept the left neighbour. Connections that have not said hello yet
    // are watched together with the listener, so a silent stray client (a
    // port scanner, a leftover) cannot hold up the one that matters.
    const int left = (rank_ - 1 + size_) % size_;
    std::vector<int> pending;
    try {
      while (leftFd_ < 0) {
        std::vector<pollfd> fds{{listenFd, POLLIN, 0}};
        for (int fd : pending)
          fds.push_back({fd, POLLIN, 0});
        const int ms = msLeft(deadline);
        DISTX_CHECK(ms > 0 && poll(fds.data(), fds.size(), ms) > 0, Timeout, "liveness: rank ",
                    left, " did not connect in time");
        for (size_t i = fds.size() - 1; i >= 1 && leftFd_ < 0; --i) {
          if (!fds[i].revents) continue;
          Msg hello{};
          const int got = tryReadMsg(fds[i].fd, hello);
          if (got == 0) continue;  // part of a message: wait for the rest
          if (got > 0 && hello.type == kHello && hello.rank == left) {
            leftFd_ = fds[i].fd;
          } else {
            close(fds[i].fd);  // a stray connection
          }
          pending.erase(pending.begin() + static_cast<long>(i - 1));
        }
        if (leftFd_ < 0 && fds[0].revents) {
          const int fd = accept4(listenFd, nullptr, nullptr, SOCK_CLOEXEC);
          if (fd >= 0) pending.push_back(fd);
        }
      }
    } catch (...) {
      for (int fd : pending)
        close(fd);
      throw;
    }
    for (int fd : pending)
      close(fd);
    closeFd(listenFd);
    hub_ = LivenessHub::acquire();
  } catch (...) {
    closeFd(listenFd);
    closeFd(leftFd_);
    closeFd(rightFd_);
    throw;
  }
  leftOpen_ = rightOpen_ = true;
  hub_->add(this);
}

LivenessRing::~LivenessRing() {
  leave();
  closeFd(leftFd_);
  closeFd(rightFd_);
}

void LivenessRing::leave() {
  if (!hub_) return;
  reported_.store(true);  // from now on, a neighbour closing is not news
  writeMsg(leftFd_, {kBye, rank_});
  writeMsg(rightFd_, {kBye, rank_});
  hub_->remove(this);
  hub_.reset();
}

void LivenessRing::report(int deadRank, const std::string& how, int fromFd) {
  const int other = fromFd == leftFd_ ? rightFd_ : leftFd_;
  writeMsg(other, {kDead, deadRank});  // pass the news on (harmless if it is gone too)
  if (reported_.exchange(true)) return;
  onDeath_(deadRank, how);
}

bool LivenessRing::onReadable(int fd) {
  // With two ranks both sides are the same neighbour but two sockets.
  const bool isLeft = fd == leftFd_ && leftOpen_;
  const int neighbour = isLeft ? (rank_ - 1 + size_) % size_ : (rank_ + 1) % size_;
  bool& open = isLeft ? leftOpen_ : rightOpen_;
  for (;;) {
    Msg m{};
    const int got = tryReadMsg(fd, m);
    if (got == 0) return open;
    if (got < 0) {
      open = false;
      report(neighbour, detail::concat("its connection to rank ", rank_, " closed"), fd);
      return false;
    }
    if (m.type == kBye) {
      open = false;
      return false;
    }
    if (m.type == kDead) report(m.rank, detail::concat("reported by rank ", neighbour), fd);
  }
}

}  // namespace distx
