// Codec objects over the kernels in cast.h and topk.h.
#include "compression/codec.h"

#include "common/error.h"
#include "compression/cast.h"
#include "compression/topk.h"

namespace distx {
namespace compression {
namespace {

class CastCodec final : public Codec {
 public:
  explicit CastCodec(Method m) : method_(m), kernels_(castKernels(m)) {}
  const char* name() const override { return methodName(method_); }
  Collective collective() const override { return Collective::kAllReduce; }
  size_t payloadBytes(size_t n) const override { return 2 * n; }
  EncodeStats encode(const float* x, size_t n, float scale, TensorState&, void* payload,
                     const Parallel& par) const override {
    EncodeStats stats;
    stats.overflow = kernels_.encode(x, static_cast<uint16_t*>(payload), n, scale, par);
    return stats;
  }
  void decode(const void* payload, size_t, size_t n, float scale, float* dense,
              const Parallel& par) const override {
    kernels_.decode(static_cast<const uint16_t*>(payload), dense, n, scale, par);
  }

 private:
  const Method method_;
  const CastKernels& kernels_;
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

const CastKernels& castKernels(Method m) {
  static const CastKernels fp16{encodeFp16, decodeFp16, countNonFiniteFp16};
  static const CastKernels bf16{encodeBf16, decodeBf16, countNonFiniteBf16};
  checkCast(m);
  return m == Method::kFp16 ? fp16 : bf16;
}

std::unique_ptr<Codec> makeCodec(Method m, const CodecOptions& options) {
  if (isCast(m)) return std::make_unique<CastCodec>(m);
  if (m == Method::kTopK) return std::make_unique<TopKCodec>(options);
  throw InvalidArgument(std::string("no codec for '") + methodName(m) + "'");
}

std::unique_ptr<Codec> makeCodec(const std::string& name, const CodecOptions& options) {
  for (Method m : {Method::kFp16, Method::kBf16, Method::kTopK}) {
    if (name == methodName(m)) return makeCodec(m, options);
  }
  throw InvalidArgument("unknown codec '" + name + "' (expected fp16, bf16 or topk)");
}

}  // namespace compression
}  // namespace distx
