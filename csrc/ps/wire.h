// Note [PS wire format]
// Every parameter-server message is one tagged transport message: a fixed
// 56-byte header, then `payloadBytes` of payload. Little-endian, no padding.
//
//   off size field         meaning
//    0   4   magic         kMagic ("DXPS")
//    4   2   version       kVersion
//    6   1   op            Op
//    7   1   dtype         DType of the payload elements (fp32 data; uint8 state blobs)
//    8   4   key           chunk id (Layout)
//   12   4   worker        sender's rank (must equal the transport's source rank)
//   16   8   clock         push/pull: the worker's clock; reply: the clock pulled
//   24   8   aux           push: Codec of the payload; reply: minimum live clock when
//                          answered; error: RejectReason
//   32   8   lr            push (server mode): learning rate of this step
//   40   8   count         payload elements
//   48   8   payloadBytes  count * dtypeSize(dtype); the message is 56 + payloadBytes
//
// Note [PS compressed pushes]
// A push's payload is the key's n-element update, raw or encoded with one of
// the csrc/compression codecs; `aux` names the codec and `dtype` must be its
// payload type:
//   kNone  fp32      count = n
//   kFp16  fp16      count = n (codec "fp16": round to nearest even)
//   kBf16  bf16      count = n (codec "bf16")
//   kTopK  int32     count = 2k words, k <= n: (index, bits of the float value)
//                    pairs with strictly ascending indices in [0, n) (codec
//                    "topk"; the worker keeps the error-feedback residual)
// The shard decodes into a dense fp32 update and then treats it as a raw push
// (finite check, optimizer). Replies and state blobs are never compressed.
//
// decode() checks everything that can be checked without state (magic,
// version, op, dtype, codec, sizes, finite lr); the Shard checks the rest (key,
// sender, clock, count against the key's size, top-k indices) before it
// touches anything. A message that fails either check is rejected with a
// RejectReason and counted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "compression/method.h"

namespace distx::ps {

constexpr uint32_t kMagic = 0x53505844;  // "DXPS" little-endian
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderBytes = 56;

enum class Op : uint8_t {
  kPushPull = 1,  // worker -> shard: apply payload (delta or gradient) at `clock`, then pull
  kPull = 2,      // worker -> shard: pull at `clock` (no payload)
  kReply = 3,     // shard -> worker: parameters of `key`
  kError = 4,     // shard -> worker: the request was rejected (aux = RejectReason)
  kLeave = 5,     // worker -> shard: done pushing; drop me from the clocks (may still read)
  kGetState = 6,  // worker -> shard: send the key's checkpoint blob
  kState = 7,     // shard -> worker: checkpoint blob (uint8 payload)
  kSetState = 8,  // worker -> shard: restore the key from a blob
  kAck = 9,       // shard -> worker: kSetState applied
  kClose = 10,    // worker -> shard: done with the server (a shard ends when all closed)
  kMaxOp = kClose,
};

// Encoding of a push payload (Note [PS compressed pushes]); travels in `aux`
// as its wire value: the compression method (Note [Codec vocabulary]).
using Codec = compression::Method;
// The payload element type a codec's push must declare.
DType codecDType(Codec c);

enum class RejectReason : uint8_t {
  kNone = 0,
  kTruncated,  // shorter than a header, or payload shorter than payloadBytes
  kBadMagic,
  kBadVersion,
  kBadOp,
  kBadDType,
  kBadLength,       // payloadBytes != count * dtypeSize, or trailing bytes
  kTooLarge,        // payload over the shard's chunk limit (or the transport truncated it)
  kBadLr,           // lr not finite or negative
  kUnknownKey,      // key not on this shard
  kCountMismatch,   // count != the key's element count
  kNotInGroup,      // sender is not a live worker of this group
  kSpoofedSender,   // header.worker != transport source
  kClockBackwards,  // push clock not exactly the sender's clock + 1, or pull ahead of it
  kNonFinite,       // payload has NaN/inf
  kBadState,        // malformed checkpoint blob
  kBadCodec,        // push: unknown codec (aux); a dtype not the codec's is kBadDType
  kBadIndex,        // top-k push: odd word count, index outside the key, or not ascending
  kCount_,
};
const char* rejectReasonName(RejectReason r);

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  Op op = Op::kPull;
  DType dtype = DType::kFloat32;
  uint32_t key = 0;
  uint32_t worker = 0;
  int64_t clock = 0;
  int64_t aux = 0;
  double lr = 0;
  uint64_t count = 0;
  uint64_t payloadBytes = 0;
};

void encodeHeader(const Header& h, uint8_t* out);  // writes kHeaderBytes

// A message viewed in place: header decoded, payload pointing into the buffer.
struct Message {
  Header header;
  const uint8_t* payload = nullptr;
};

// Validates a received message of `bytes` bytes. `maxPayloadBytes` bounds the
// payload (the shard's largest chunk or state blob). Never reads past `bytes`.
RejectReason decode(const uint8_t* data, size_t bytes, size_t maxPayloadBytes, Message& out);

// Builds header + payload into one buffer.
std::vector<uint8_t> build(const Header& h, const void* payload, size_t payloadBytes);

}  // namespace distx::ps
