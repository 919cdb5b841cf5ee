#include "transport/liveness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
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

// Reads one message; false on EOF or error (the peer is gone).
bool readMsg(int fd, Msg& m) {
  size_t got = 0;
  auto* p = reinterpret_cast<char*>(&m);
  while (got < sizeof m) {
    const ssize_t n = recv(fd, p + got, sizeof m - got, 0);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    got += static_cast<size_t>(n);
  }
  return true;
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

}  // namespace

LivenessRing::LivenessRing(int rank, int size, Bootstrap& bootstrap, Deadline deadline,
                           OnDeath onDeath)
    : rank_(rank), size_(size), onDeath_(std::move(onDeath)) {
  if (size_ < 2) return;
  DISTX_CHECK(pipe2(wakeFds_, O_CLOEXEC) == 0, TransportError, "liveness: pipe2 failed");
  listenFd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  DISTX_CHECK(listenFd_ >= 0, TransportError, "liveness: socket failed: ", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof addr;
  DISTX_CHECK(bind(listenFd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  listen(listenFd_, 16) == 0 &&
                  getsockname(listenFd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0,
              TransportError, "liveness: bind/listen failed: ", std::strerror(errno));
  const std::string mine = localAddresses(ntohs(addr.sin_port));
  bootstrap.set("live_addr/" + std::to_string(rank_),
                std::vector<uint8_t>(mine.begin(), mine.end()));

  // Connect to the right neighbour (its listen backlog accepts before it calls accept()).
  const int right = (rank_ + 1) % size_;
  const auto raw = bootstrap.get("live_addr/" + std::to_string(right));
  const std::string peer(raw.begin(), raw.end());
  const size_t bar1 = peer.find('|'), bar2 = peer.rfind('|');
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
  DISTX_CHECK(rightFd_ >= 0, TransportError, "liveness: could not connect to rank ", right, " at ",
              peer);
  DISTX_CHECK(writeMsg(rightFd_, {kHello, rank_}), TransportError, "liveness: hello to rank ",
              right, " failed");

  // Accept the left neighbour.
  const int left = (rank_ - 1 + size_) % size_;
  while (leftFd_ < 0) {
    pollfd p{listenFd_, POLLIN, 0};
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    DISTX_CHECK(ms > 0 && poll(&p, 1, static_cast<int>(ms)) > 0, Timeout, "liveness: rank ", left,
                " did not connect in time");
    int fd = accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    Msg hello{};
    if (readMsg(fd, hello) && hello.type == kHello && hello.rank == left) {
      leftFd_ = fd;
    } else {
      close(fd);  // a stray connection
    }
  }
  close(listenFd_);
  listenFd_ = -1;
  thread_ = std::thread([this] { loop(); });
}

LivenessRing::~LivenessRing() {
  leave();
  for (int fd : {leftFd_, rightFd_, listenFd_, wakeFds_[0], wakeFds_[1]}) {
    if (fd >= 0) close(fd);
  }
}

void LivenessRing::leave() {
  if (!thread_.joinable()) return;
  reported_.store(true);  // from now on, a neighbour closing is not news
  writeMsg(leftFd_, {kBye, rank_});
  writeMsg(rightFd_, {kBye, rank_});
  const char c = 1;
  (void)!write(wakeFds_[1], &c, 1);
  thread_.join();
}

void LivenessRing::report(int deadRank, const std::string& how, int fromFd) {
  const int other = fromFd == leftFd_ ? rightFd_ : leftFd_;
  writeMsg(other, {kDead, deadRank});  // pass the news on (harmless if it is gone too)
  if (reported_.exchange(true)) return;
  onDeath_(deadRank, how);
}

void LivenessRing::loop() {
  const int left = (rank_ - 1 + size_) % size_, right = (rank_ + 1) % size_;
  bool leftOpen = true, rightOpen = true;
  while (leftOpen || rightOpen) {
    pollfd fds[3] = {{leftOpen ? leftFd_ : -1, POLLIN, 0},
                     {rightOpen ? rightFd_ : -1, POLLIN, 0},
                     {wakeFds_[0], POLLIN, 0}};
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[2].revents) return;  // leave()
    for (int side = 0; side < 2; ++side) {
      if (!fds[side].revents) continue;
      const int fd = side == 0 ? leftFd_ : rightFd_;
      const int neighbour = side == 0 ? left : right;
      bool& open = side == 0 ? leftOpen : rightOpen;
      Msg m{};
      if (!readMsg(fd, m)) {
        open = false;
        report(neighbour, detail::concat("its connection to rank ", rank_, " closed"), fd);
      } else if (m.type == kBye) {
        open = false;
      } else if (m.type == kDead) {
        report(m.rank, detail::concat("reported by rank ", neighbour), fd);
      }
    }
  }
}

}  // namespace distx
