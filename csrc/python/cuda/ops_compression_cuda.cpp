// The CUDA bodies of the codec ops (ops_codec.hpp), over the .cu kernels of
// compression/cuda_kernels.h on the current stream. Compiled only with CUDA.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "compression/cuda_kernels.h"
#include "python/ops_codec.hpp"

namespace distx::ops {
namespace {

namespace cxc = compression::cuda;

void* currentStream() {
  return c10::cuda::getCurrentCUDAStream().stream();
}

void castEncode(const at::Tensor& in, const at::Tensor& out, float scale, compression::Method m,
                const char* op) {
  const c10::cuda::CUDAGuard guard(in.device());
  translate(op, [&] {
    cxc::castKernels(m).encode(in.data_ptr<float>(), reinterpret_cast<uint16_t*>(out.data_ptr()),
                               in.numel(), scale, nullptr, currentStream());
    return 0;
  });
}

void castDecode(const at::Tensor& in, const at::Tensor& out, float scale, compression::Method m,
                const char* op) {
  const c10::cuda::CUDAGuard guard(in.device());
  translate(op, [&] {
    cxc::castKernels(m).decode(reinterpret_cast<const uint16_t*>(in.data_ptr()),
                               out.data_ptr<float>(), in.numel(), scale, nullptr, currentStream());
    return 0;
  });
}

at::Tensor castDecodeInto(const at::Tensor& in, const at::Tensor& out, float scale,
                          compression::Method m, const char* op) {
  const c10::cuda::CUDAGuard guard(in.device());
  at::Tensor bad = at::zeros({}, in.options().dtype(at::kLong));
  auto* counter = reinterpret_cast<unsigned long long*>(bad.data_ptr<int64_t>());
  const auto* src = reinterpret_cast<const uint16_t*>(in.data_ptr());
  translate(op, [&] {
    const auto& k = cxc::castKernels(m);
    cxc::countNonFinite(src, in.numel(), k.bf16, counter, currentStream());
    k.decode(src, out.data_ptr<float>(), in.numel(), scale, counter, currentStream());
    return 0;
  });
  return bad;
}

void topkEncode(const at::Tensor& in, float* residual, int64_t k, const at::Tensor& pairs,
                const char* op) {
  const c10::cuda::CUDAGuard guard(in.device());
  const int64_t n = in.numel();
  at::Tensor scratch =
      at::empty({static_cast<int64_t>(cxc::topkScratchBytes(n))}, in.options().dtype(at::kByte));
  translate(op, [&] {
    return cxc::encodeTopK(in.data_ptr<float>(), residual, n, k, 1.0f, pairs.data_ptr<int32_t>(),
                           scratch.data_ptr(), currentStream());
  });
}

void topkDecode(const at::Tensor& in, const at::Tensor& out, float scale, const char* op) {
  const c10::cuda::CUDAGuard guard(in.device());
  // Leading dimensions are segments (ranks) applied in order; see cuda_kernels.h.
  const size_t count = static_cast<size_t>(in.numel() / 2);
  const size_t segmentPairs = in.dim() >= 2 ? static_cast<size_t>(in.size(-2)) : 1;
  const size_t segments = segmentPairs ? count / segmentPairs : 0;
  translate(op, [&] {
    cxc::decodeTopK(in.data_ptr<int32_t>(), segments, segmentPairs,
                    static_cast<size_t>(out.numel()), scale, out.data_ptr<float>(), false,
                    currentStream());
    return 0;
  });
}

}  // namespace

const CudaCodecOps& cudaCodecOps() {
  static const CudaCodecOps ops{castEncode, castDecode, castDecodeInto, topkEncode, topkDecode};
  return ops;
}

}  // namespace distx::ops
