#include "ps/client.h"

#include <cstring>
#include <functional>

#include "common/error.h"
#include "common/tag.h"

namespace distx::ps {

Client::Client(Transport& transport, Layout layout, std::chrono::milliseconds timeout, Codec codec,
               double topkRatio)
    : transport_(transport), layout_(std::move(layout)), timeout_(timeout), codecId_(codec) {
  recvBufs_.resize(layout_.keys());
  recvs_.resize(layout_.keys());
  states_.resize(layout_.keys());
  if (codec != Codec::kNone) {
    compression::CodecOptions options;
    options.ratio = topkRatio;
    options.errorFeedback = true;
    codec_ = compression::makeCodec(codec, options);  // validates the ratio
  }
}

Client::~Client() {
  // Replies still in flight would write into recvBufs_: cancel them first.
  recvs_.clear();
}

void Client::send(int dst, uint32_t key, std::vector<uint8_t> buf) {
  Sending s;
  s.buf = std::move(buf);
  s.req = transport_.send(dst, tag::makePs(tag::kPsToShard, transport_.rank(), key), s.buf.data(),
                          s.buf.size());
  sending_.push_back(std::move(s));
}

void Client::reapSends(bool block) {
  const auto deadline = Clock::now() + timeout_;
  std::vector<Sending> keep;
  for (auto& s : sending_) {
    if (block) {
      transport_.wait(*s.req, deadline, "ps push to a shard");
    } else if (!s.req->test()) {
      keep.push_back(std::move(s));
    }
  }
  sending_.swap(keep);
}

void Client::start(Op op, const float* update, double lr) {
  DISTX_CHECK(!inFlight_, InvalidArgument, "ps: a push/pull is already in flight (call wait())");
  reapSends(false);
  const int64_t c = op == Op::kPushPull ? clock_ + 1 : clock_;
  for (uint32_t k = 0; k < layout_.keys(); ++k) {
    const size_t n = layout_.count(k);
    recvBufs_[k].resize(kHeaderBytes + n * sizeof(float));
    const int server = layout_.serverOf(k);
    recvs_[k] = transport_.recv(server, tag::makePs(tag::kPsToWorker, server, k), tag::kFullMask,
                                recvBufs_[k].data(), recvBufs_[k].size());
    Header h;
    h.op = op;
    h.key = k;
    h.worker = static_cast<uint32_t>(transport_.rank());
    h.clock = c;
    h.lr = lr;
    if (op == Op::kPushPull) {
      rawBytes_ += n * sizeof(float);
      if (codec_) {
        const size_t bytes = codec_->payloadBytes(n);
        encoded_.resize(bytes);
        codec_->encode(update + layout_.offset(k), n, 1.0f, states_[k], encoded_.data(),
                       compression::serialParallel());
        h.aux = static_cast<int64_t>(codecId_);
        h.dtype = codecDType(codecId_);
        h.count = bytes / dtypeSize(h.dtype);
        pushedBytes_ += bytes;
        send(server, k, build(h, encoded_.data(), bytes));
      } else {
        h.count = n;
        pushedBytes_ += n * sizeof(float);
        send(server, k, build(h, update + layout_.offset(k), n * sizeof(float)));
      }
    } else {
      send(server, k, build(h, nullptr, 0));
    }
  }
  clock_ = c;
  inFlight_ = true;
}

void Client::pushPull(const float* update, double lr) {
  start(Op::kPushPull, update, lr);
}

void Client::pull() {
  start(Op::kPull, nullptr, 0);
}

void Client::receiveAll(Op expect, const std::vector<uint32_t>& keys,
                        const std::function<void(uint32_t, const Message&)>& onMessage) {
  const auto deadline = Clock::now() + timeout_;
  for (uint32_t k : keys) {
    const int server = layout_.serverOf(k);
    transport_.wait(*recvs_[k], deadline,
                    detail::concat("ps reply for chunk ", k, " from shard on rank ", server));
    const size_t bytes = recvs_[k]->receivedBytes();
    recvs_[k].reset();
    Message m;
    const RejectReason r = decode(recvBufs_[k].data(), bytes, recvBufs_[k].size(), m);
    DISTX_CHECK(r == RejectReason::kNone, TransportError, "ps: malformed reply for chunk ", k,
                " from rank ", server, ": ", rejectReasonName(r));
    if (m.header.op == Op::kError) {
      const auto why = static_cast<RejectReason>(
          m.header.aux >= 0 && m.header.aux < static_cast<int64_t>(RejectReason::kCount_)
              ? m.header.aux
              : 0);
      throw InvalidArgument(detail::concat("ps: the shard on rank ", server, " rejected chunk ", k,
                                           " at clock ", m.header.clock, ": ",
                                           rejectReasonName(why)));
    }
    DISTX_CHECK(m.header.op == expect && m.header.key == k, TransportError,
                "ps: unexpected reply op ", static_cast<int>(m.header.op), " for chunk ", k);
    onMessage(k, m);
  }
}

void Client::wait(float* out) {
  DISTX_CHECK(inFlight_, InvalidArgument, "ps: wait() without a push/pull in flight");
  inFlight_ = false;
  std::vector<uint32_t> keys(layout_.keys());
  for (uint32_t k = 0; k < keys.size(); ++k)
    keys[k] = k;
  try {
    receiveAll(Op::kReply, keys, [&](uint32_t k, const Message& m) {
      DISTX_CHECK(m.header.count == layout_.count(k), TransportError, "ps: reply for chunk ", k,
                  " has ", m.header.count, " elements, expected ", layout_.count(k));
      std::memcpy(out + layout_.offset(k), m.payload, m.header.payloadBytes);
      replyLog_.emplace_back(m.header.clock, m.header.aux);
    });
  } catch (...) {
    for (auto& r : recvs_)
      r.reset();
    throw;
  }
  reapSends(false);
}

void Client::sendToAllShards(Op op) {
  if (inFlight_) {
    for (auto& r : recvs_)
      r.reset();
    inFlight_ = false;
  }
  Header h;
  h.op = op;
  h.worker = static_cast<uint32_t>(transport_.rank());
  for (int s : layout_.servers())
    send(s, 0, build(h, nullptr, 0));
  try {
    reapSends(true);
  } catch (const Error&) {
    // A dead shard cannot be told; nothing else to do.
  }
}

void Client::leave() {
  if (left_) return;
  left_ = true;
  sendToAllShards(Op::kLeave);
}

void Client::close() {
  if (closed_) return;
  closed_ = left_ = true;
  sendToAllShards(Op::kClose);
}

std::vector<std::vector<uint8_t>> Client::getState() {
  DISTX_CHECK(!inFlight_, InvalidArgument, "ps: state_dict() while a push/pull is in flight");
  std::vector<std::vector<uint8_t>> blobs(layout_.keys());
  // A blob is at most params * 3 + clocks; size the receive generously.
  std::vector<uint32_t> keys;
  for (uint32_t k = 0; k < layout_.keys(); ++k) {
    const int server = layout_.serverOf(k);
    recvBufs_[k].resize(kHeaderBytes + layout_.count(k) * sizeof(float) * 3 +
                        sizeof(int64_t) * (1 + transport_.size()));
    recvs_[k] = transport_.recv(server, tag::makePs(tag::kPsToWorker, server, k), tag::kFullMask,
                                recvBufs_[k].data(), recvBufs_[k].size());
    Header h;
    h.op = Op::kGetState;
    h.key = k;
    h.worker = static_cast<uint32_t>(transport_.rank());
    send(server, k, build(h, nullptr, 0));
    keys.push_back(k);
  }
  receiveAll(Op::kState, keys, [&](uint32_t k, const Message& m) {
    blobs[k].assign(m.payload, m.payload + m.header.payloadBytes);
  });
  reapSends(false);
  return blobs;
}

void Client::setState(const std::vector<std::vector<uint8_t>>& blobs) {
  DISTX_CHECK(!inFlight_, InvalidArgument, "ps: load_state_dict() while a push/pull is in flight");
  DISTX_CHECK(blobs.size() == layout_.keys(), InvalidArgument, "ps: state has ", blobs.size(),
              " chunks, the layout ", layout_.keys());
  std::vector<uint32_t> keys;
  for (uint32_t k = 0; k < layout_.keys(); ++k) {
    const int server = layout_.serverOf(k);
    recvBufs_[k].resize(kHeaderBytes);
    recvs_[k] = transport_.recv(server, tag::makePs(tag::kPsToWorker, server, k), tag::kFullMask,
                                recvBufs_[k].data(), recvBufs_[k].size());
    Header h;
    h.op = Op::kSetState;
    h.dtype = DType::kUInt8;
    h.key = k;
    h.worker = static_cast<uint32_t>(transport_.rank());
    h.count = blobs[k].size();
    send(server, k, build(h, blobs[k].data(), blobs[k].size()));
    keys.push_back(k);
  }
  receiveAll(Op::kAck, keys, [](uint32_t, const Message&) {});
  reapSends(false);
}

}  // namespace distx::ps
