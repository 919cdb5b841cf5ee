// The codec interface: one object per compression method (Note [Codec
// vocabulary], method.h), used by the parameter server's pushes and shards.
// The group switch (algorithms/compressed.h) and the torch ops
// (python/ops_compression.cpp) call the kernels directly through the same
// method's kernel table (castKernels, cast.h; topk.h), since they slice,
// pipeline and guard what they encode in ways one encode() call cannot say.
//
//   encode(x, state) -> payload      one rank's contribution
//   collective()                     how payloads are combined across ranks:
//                                      kAllReduce  payloads are summed element-wise in the
//                                                  payload type (fp16/bf16 casts)
//                                      kAllGather  payloads are concatenated (top-k)
//   decode(combined payload) -> dense
//
// A codec is stateless; what it keeps between steps for one tensor (the top-k
// error-feedback residual) lives in a TensorState the caller owns, one per
// tensor or bucket. Dense data is float32 throughout.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compression/method.h"
#include "compression/parallel.h"

namespace distx {
namespace compression {

enum class Collective { kAllReduce, kAllGather };

struct TensorState {
  std::vector<float> residual;  // sized on first use (zeros) by codecs that need it
};

struct EncodeStats {
  size_t overflow = 0;   // casts: finite elements that became +/-inf (cast.h)
  size_t nonFinite = 0;  // top-k: NaN/inf entries of gradient + residual (topk.h)
};

struct CodecOptions {
  double ratio = 0.01;        // top-k: density k/n
  bool errorFeedback = true;  // top-k: keep the unsent remainder in TensorState
};

class Codec {
 public:
  virtual ~Codec() = default;
  virtual const char* name() const = 0;
  virtual Collective collective() const = 0;
  // Bytes of one rank's payload for a tensor of n elements.
  virtual size_t payloadBytes(size_t n) const = 0;
  // Encodes x*scale (n floats) into payload (payloadBytes(n) bytes).
  virtual EncodeStats encode(const float* x, size_t n, float scale, TensorState& state,
                             void* payload, const Parallel& par = defaultParallel()) const = 0;
  // Decodes the combined payload of `ranks` ranks into dense (n floats), times
  // scale: the all-reduced payload for kAllReduce, `ranks` payloads back to
  // back for kAllGather.
  virtual void decode(const void* payload, size_t ranks, size_t n, float scale, float* dense,
                      const Parallel& par = defaultParallel()) const = 0;
};

// The codec of a method (Note [Codec vocabulary]); InvalidArgument for kNone.
std::unique_ptr<Codec> makeCodec(Method m, const CodecOptions& options = {});
// By name: "fp16", "bf16" or "topk"; throws InvalidArgument for another name.
std::unique_ptr<Codec> makeCodec(const std::string& name, const CodecOptions& options = {});

}  // namespace compression
}  // namespace distx
