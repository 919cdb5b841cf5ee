// What the torch ops of the codecs (ops_compression.cpp) share between their
// CPU bodies and their CUDA twins (cuda/ops_compression_cuda.cpp): argument
// checks, error translation, and the table of CUDA kernels a CUDA tensor goes
// to. One list of methods names them all (Note [Codec vocabulary]).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "common/error.h"
#include "compression/method.h"

namespace distx::ops {

// Core errors become the Python exceptions users expect.
template <typename F>
auto translate(const char* op, F&& f) {
  try {
    return f();
  } catch (const InvalidArgument& e) {
    TORCH_CHECK_VALUE(false, "distx::", op, ": ", e.what());
  } catch (const Error& e) {
    TORCH_CHECK(false, "distx::", op, ": ", e.what());
  }
}

// The payload dtype of a cast method: kHalf for fp16, kBFloat16 for bf16.
inline at::ScalarType payloadType(compression::Method m) {
  return m == compression::Method::kFp16 ? at::kHalf : at::kBFloat16;
}

// The CUDA bodies of the ops, on the current stream of the tensors' device
// (cuda/ops_compression_cuda.cpp). Inputs are checked and contiguous; outputs
// allocated. castDecodeInto returns a device int64 count of NaN/inf codes and
// writes `out` only when it is 0.
struct CudaCodecOps {
  void (*castEncode)(const at::Tensor& in, const at::Tensor& out, float scale,
                     compression::Method m, const char* op);
  void (*castDecode)(const at::Tensor& in, const at::Tensor& out, float scale,
                     compression::Method m, const char* op);
  at::Tensor (*castDecodeInto)(const at::Tensor& in, const at::Tensor& out, float scale,
                               compression::Method m, const char* op);
  void (*topkEncode)(const at::Tensor& in, float* residual, int64_t k, const at::Tensor& pairs,
                     const char* op);
  void (*topkDecode)(const at::Tensor& in, const at::Tensor& out, float scale, const char* op);
};
// ValueError in a build without CUDA (no CUDA tensor reaches it there).
const CudaCodecOps& cudaCodecOps();

}  // namespace distx::ops
