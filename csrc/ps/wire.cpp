#include "ps/wire.h"

#include <cmath>
#include <cstring>
#include <iterator>

#include "common/enum_table.h"

namespace distx::ps {
namespace {

template <typename T>
void put(uint8_t* out, size_t off, T v) {
  std::memcpy(out + off, &v, sizeof(T));  // hosts are little-endian (x86-64, aarch64)
}
template <typename T>
T get(const uint8_t* in, size_t off) {
  T v;
  std::memcpy(&v, in + off, sizeof(T));
  return v;
}

bool validDType(uint8_t d) {
  return d <= static_cast<uint8_t>(DType::kComplex128);
}

// Indexed by RejectReason (wire.h), in its order.
constexpr const char* kRejectReasonNames[] = {
    "none",                 // kNone
    "truncated",            // kTruncated
    "bad magic",            // kBadMagic
    "bad version",          // kBadVersion
    "bad op",               // kBadOp
    "bad dtype",            // kBadDType
    "bad length",           // kBadLength
    "too large",            // kTooLarge
    "bad lr",               // kBadLr
    "unknown key",          // kUnknownKey
    "count mismatch",       // kCountMismatch
    "sender not in group",  // kNotInGroup
    "spoofed sender",       // kSpoofedSender
    "clock out of order",   // kClockBackwards
    "non-finite payload",   // kNonFinite
    "bad state blob",       // kBadState
    "bad codec",            // kBadCodec
    "bad top-k index",      // kBadIndex
};
static_assert(std::size(kRejectReasonNames) == static_cast<size_t>(RejectReason::kCount_),
              "one name per RejectReason");

}  // namespace

const char* rejectReasonName(RejectReason r) {
  return enumLookup(kRejectReasonNames, r, "?");
}

DType codecDType(Codec c) {
  switch (c) {
    case Codec::kFp16:
      return DType::kFloat16;
    case Codec::kBf16:
      return DType::kBFloat16;
    case Codec::kTopK:
      return DType::kInt32;
    case Codec::kNone:
      break;
  }
  return DType::kFloat32;
}

void encodeHeader(const Header& h, uint8_t* out) {
  put<uint32_t>(out, 0, h.magic);
  put<uint16_t>(out, 4, h.version);
  put<uint8_t>(out, 6, static_cast<uint8_t>(h.op));
  put<uint8_t>(out, 7, static_cast<uint8_t>(h.dtype));
  put<uint32_t>(out, 8, h.key);
  put<uint32_t>(out, 12, h.worker);
  put<int64_t>(out, 16, h.clock);
  put<int64_t>(out, 24, h.aux);
  put<double>(out, 32, h.lr);
  put<uint64_t>(out, 40, h.count);
  put<uint64_t>(out, 48, h.payloadBytes);
}

RejectReason decode(const uint8_t* data, size_t bytes, size_t maxPayloadBytes, Message& out) {
  if (data == nullptr || bytes < kHeaderBytes) return RejectReason::kTruncated;
  Header& h = out.header;
  h.magic = get<uint32_t>(data, 0);
  if (h.magic != kMagic) return RejectReason::kBadMagic;
  h.version = get<uint16_t>(data, 4);
  if (h.version != kVersion) return RejectReason::kBadVersion;
  const uint8_t op = get<uint8_t>(data, 6);
  if (op < static_cast<uint8_t>(Op::kPushPull) || op > static_cast<uint8_t>(Op::kMaxOp))
    return RejectReason::kBadOp;
  h.op = static_cast<Op>(op);
  const uint8_t dt = get<uint8_t>(data, 7);
  if (!validDType(dt)) return RejectReason::kBadDType;
  h.dtype = static_cast<DType>(dt);
  h.key = get<uint32_t>(data, 8);
  h.worker = get<uint32_t>(data, 12);
  h.clock = get<int64_t>(data, 16);
  h.aux = get<int64_t>(data, 24);
  h.lr = get<double>(data, 32);
  h.count = get<uint64_t>(data, 40);
  h.payloadBytes = get<uint64_t>(data, 48);
  // Per-op payload type: data ops carry fp32, state ops bytes, the rest nothing.
  switch (h.op) {
    case Op::kPushPull:
      // Note [PS compressed pushes]: aux names the codec, dtype its payload type.
      if (h.aux < 0 || h.aux > static_cast<int64_t>(compression::kMaxMethod))
        return RejectReason::kBadCodec;
      if (h.dtype != codecDType(static_cast<Codec>(h.aux))) return RejectReason::kBadDType;
      break;
    case Op::kReply:
      if (h.dtype != DType::kFloat32) return RejectReason::kBadDType;
      break;
    case Op::kState:
    case Op::kSetState:
      if (h.dtype != DType::kUInt8) return RejectReason::kBadDType;
      break;
    default:
      if (h.count != 0 || h.payloadBytes != 0) return RejectReason::kBadLength;
      break;
  }
  if (h.payloadBytes > maxPayloadBytes) return RejectReason::kTooLarge;
  // count * size == payloadBytes without overflow: payloadBytes is already bounded.
  const size_t esize = dtypeSize(h.dtype);
  if (h.count > h.payloadBytes || h.count * esize != h.payloadBytes)
    return RejectReason::kBadLength;
  if (bytes - kHeaderBytes < h.payloadBytes) return RejectReason::kTruncated;
  if (bytes - kHeaderBytes > h.payloadBytes) return RejectReason::kBadLength;
  if (h.op == Op::kPushPull && !(std::isfinite(h.lr) && h.lr >= 0)) return RejectReason::kBadLr;
  if (h.clock < 0) return RejectReason::kClockBackwards;
  out.payload = data + kHeaderBytes;
  return RejectReason::kNone;
}

std::vector<uint8_t> build(const Header& h, const void* payload, size_t payloadBytes) {
  std::vector<uint8_t> buf(kHeaderBytes + payloadBytes);
  Header hh = h;
  hh.payloadBytes = payloadBytes;
  encodeHeader(hh, buf.data());
  if (payloadBytes) std::memcpy(buf.data() + kHeaderBytes, payload, payloadBytes);
  return buf;
}

}  // namespace distx::ps
