// Typed errors for core code (algorithms, transport). The backend maps them to
// the torch exceptions users catch (backend/worker.cpp for a job's errors,
// backend/group_factory.cpp for a group's settings):
//   InvalidArgument -> ValueError, Unsupported -> TypeError/RuntimeError,
//   Timeout / PeerFailure / TransportError -> torch.distributed.DistBackendError.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace distx {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InvalidArgument : public Error {
 public:
  using Error::Error;
};

class Unsupported : public Error {
 public:
  using Error::Error;
};

class Timeout : public Error {
 public:
  using Error::Error;
};

class PeerFailure : public Error {
 public:
  using Error::Error;
};

class TransportError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace distx

// DISTX_CHECK(cond, ErrorType, msg parts...) throws ErrorType(msg) when cond is false.
#define DISTX_CHECK(cond, ErrorType, ...)                               \
  do {                                                                  \
    if (!(cond)) throw ErrorType(::distx::detail::concat(__VA_ARGS__)); \
  } while (0)
