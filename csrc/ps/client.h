// Client: the worker's side of the parameter server, over a Transport.
//
// pushPull(update, lr) starts one step: for every key it posts the receive of
// the reply, then sends kPushPull(key, clock + 1, the key's slice of
// `update`) to the key's shard. It returns at once; wait(out) blocks until
// every reply arrived and copies the parameters into `out`. Between the two the
// transport's progress thread moves the data, so the caller can compute.
// A kError reply, a dead shard (abort() with its name) or the deadline raise.
//
// Compression (Note [PS compressed pushes]): with a codec, each key's slice of
// the update is encoded with csrc/compression before it is sent; for top-k
// the error-feedback residual of each key stays here, on the worker, and is
// added to the next push of that key (what was not sent is not lost).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compression/codec.h"
#include "ps/layout.h"
#include "ps/wire.h"
#include "transport/transport.h"

namespace distx::ps {

class Client {
 public:
  // `topkRatio`: density k/n of each key's top-k push (codec kTopK only).
  Client(Transport& transport, Layout layout, std::chrono::milliseconds timeout,
         Codec codec = Codec::kNone, double topkRatio = 0.01);
  ~Client();

  int64_t clock() const { return clock_; }
  void setClock(int64_t c) { clock_ = c; }
  bool inFlight() const { return inFlight_; }

  // Pushes `update` (layout.total() floats) at clock + 1 and pulls at that clock.
  void pushPull(const float* update, double lr);
  // Pulls at the current clock without pushing.
  void pull();
  // Waits for the replies of the last pushPull/pull; writes parameters to `out`.
  void wait(float* out);

  // Done pushing: every shard drops this worker from its clocks (so nobody
  // waits for it); it may still read state (getState) until close().
  void leave();
  // Done with the server: after this a shard may end once all workers closed.
  void close();

  // Checkpoint blobs, one per key (blocking; nothing may be in flight).
  std::vector<std::vector<uint8_t>> getState();
  void setState(const std::vector<std::vector<uint8_t>>& blobs);

  // (clock pulled, minimum live clock the shard reported) for every reply.
  const std::vector<std::pair<int64_t, int64_t>>& replyLog() const { return replyLog_; }
  void clearReplyLog() { replyLog_.clear(); }

  // Payload bytes of every push so far (after compression), and the raw fp32 bytes.
  uint64_t pushedBytes() const { return pushedBytes_; }
  uint64_t rawBytes() const { return rawBytes_; }
  // Top-k error-feedback residual of `key` (empty before its first push or without top-k).
  const std::vector<float>& residual(uint32_t key) const { return states_.at(key).residual; }

 private:
  void start(Op op, const float* update, double lr);
  void send(int dst, uint32_t key, std::vector<uint8_t> buf);
  void reapSends(bool block);
  // Receives one message per key in `keys` (op `expect`), checked.
  void receiveAll(Op expect, const std::vector<uint32_t>& keys,
                  const std::function<void(uint32_t, const Message&)>& onMessage);

  Transport& transport_;
  const Layout layout_;
  const std::chrono::milliseconds timeout_;
  int64_t clock_ = 0;
  bool inFlight_ = false;
  bool left_ = false;
  bool closed_ = false;
  void sendToAllShards(Op op);
  std::vector<std::vector<uint8_t>> recvBufs_;  // per key: header + payload
  std::vector<RequestPtr> recvs_;
  struct Sending {
    RequestPtr req;
    std::vector<uint8_t> buf;
  };
  std::vector<Sending> sending_;
  std::vector<std::pair<int64_t, int64_t>> replyLog_;
  const Codec codecId_;
  std::unique_ptr<compression::Codec> codec_;     // null: raw fp32 pushes
  std::vector<compression::TensorState> states_;  // per key
  std::vector<uint8_t> encoded_;
  uint64_t pushedBytes_ = 0, rawBytes_ = 0;
};

}  // namespace distx::ps
