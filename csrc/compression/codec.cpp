// Codec objects over the kernels in cast.h and topk.h.
#include "compression/codec.h"

#include "common/error.h"
#include "compression/cast.h"
#include "compression/topk.h"

namespace distx {
namespace compression {
namespace {

template <size_t (*Encode)(const float*, uint16_t*, size_t, float, const Parallel&),
          void (*Decode)(const uint16_t*, float*, size_t, float, const Parallel&)>
class CastCodec final : public Codec {
 public:
  explicit CastCodec(const char* name) : name_(name) {}
  const char* name() const override { return name_; }
  Collective collective() const override { return Collective::kAllReduce; }
  size_t payloadBytes(size_t n) const override { return 2 * n; }
  EncodeStats encode(const float* x, size_t n, float scale, TensorState&, void* payload,
                     const Parallel& par) const override {
    EncodeStats stats;
    stats.overflow = Encode(x, static_cast<uint16_t*>(payload), n, scale, par);
    return stats;
  }
  void decode(const void* payload, size_t, size_t n, float scale, float* dense,
              const Parallel& par) const override {
    Decode(static_cast<const uint16_t*>(payload), dense, n, scale, par);
  }

 private:
  const char* name_;
};

class TopKCodec final : public Codec {
 public:
  explicit TopKCodec(const CodecOptions& options) : options_(options) {
    topkCount(1, options.ratio);  // validates the ratio
  }
  const char* name() const override { return "topk"; }
  Collective collective() const override { return Collective::kAllGather; }
  size_t payloadBytes(size_t n) const override {
    return topkPayloadBytes(topkCount(n, options_.ratio));
  }
  EncodeStats encode(const float* x, size_t n, float scale, TensorState& state, void* payload,
                     const Parallel& par) const override {
    float* residual = nullptr;
    if (options_.errorFeedback) {
      if (state.residual.size() != n) state.residual.assign(n, 0.0f);
      residual = state.residual.data();
    }
    EncodeStats stats;
    stats.nonFinite = encodeTopK(x, residual, n, topkCount(n, options_.ratio), scale,
                                 static_cast<int32_t*>(payload), par);
    return stats;
  }
  void decode(const void* payload, size_t ranks, size_t n, float scale, float* dense,
              const Parallel& par) const override {
    decodeTopK(static_cast<const int32_t*>(payload), ranks * topkCount(n, options_.ratio), n, scale,
               dense, /*accumulate=*/false, par);
  }

 private:
  CodecOptions options_;
};

}  // namespace

std::unique_ptr<Codec> makeCodec(const std::string& name, const CodecOptions& options) {
  if (name == "fp16") return std::make_unique<CastCodec<encodeFp16, decodeFp16>>("fp16");
  if (name == "bf16") return std::make_unique<CastCodec<encodeBf16, decodeBf16>>("bf16");
  if (name == "topk") return std::make_unique<TopKCodec>(options);
  throw InvalidArgument("unknown codec '" + name + "' (expected fp16, bf16 or topk)");
}

}  // namespace compression
}  // namespace distx
