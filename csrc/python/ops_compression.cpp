// torch.ops.distx.*: the compression codecs (csrc/compression) as torch custom
// ops, for CPU and (with DISTX_WITH_CUDA) CUDA tensors. Fake kernels for
// torch.compile live in torch_distx/ops.py. Other files that add ops to the
// distx namespace must use TORCH_LIBRARY_FRAGMENT(distx, m).
//
//   fp16_encode(x, scale=1) -> half       fp16(x * scale), x any floating dtype
//   fp16_decode(payload, scale=1) -> f32  float(payload) * scale
//   bf16_encode / bf16_decode             the same for bfloat16
//   topk_encode(x, k) -> int32 [k, 2]     (index, float bits) pairs, see topk.h
//   topk_encode_ef(grad, residual!, k)    the same on grad + residual; updates residual
//   topk_decode(payload [..., 2], numel, scale=1) -> f32 [numel]
//   fp16_decode_into / bf16_decode_into(payload, out!, scale=1) -> int64 count
//                                         guarded decode into a float32 `out`: returns the
//                                         number of NaN/inf payload codes and writes `out`
//                                         only when it is 0 (so the caller keeps its data
//                                         for a dense fallback; see torch_distx/hooks)
//   topk_decode_into(payload, out!, scale=1)  topk_decode into a float32 `out`
#include <torch/library.h>

#include <cmath>
#include <string>

#include "backend/torch_parallel.hpp"
#include "compression/cast.h"
#include "compression/topk.h"
#include "python/ops_codec.hpp"

namespace distx {
namespace ops {

#ifndef DISTX_WITH_CUDA
const CudaCodecOps& cudaCodecOps() {
  TORCH_CHECK_VALUE(false, "distx: this build has no CUDA support");
}
#endif

}  // namespace ops

namespace {

namespace cx = compression;
using cx::Method;
using ops::cudaCodecOps;
using ops::translate;

at::Tensor floatInput(const at::Tensor& x, const char* op) {
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "distx::", op,
                   ": expected a floating tensor, got ", x.scalar_type());
  return x.to(at::kFloat).contiguous();
}

void checkScale(double scale, const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(scale), "distx::", op, ": scale must be finite, got ", scale);
}

bool onCuda(const at::Tensor& t) {
  return t.device().is_cuda();
}

// ---------------------------------------------------------------- casts

at::Tensor castEncode(const at::Tensor& x, double scale, Method m, const char* op) {
  checkScale(scale, op);
  const at::Tensor in = floatInput(x, op);
  at::Tensor out = at::empty(x.sizes(), in.options().dtype(ops::payloadType(m)));
  if (onCuda(in)) {
    cudaCodecOps().castEncode(in, out, static_cast<float>(scale), m, op);
    return out;
  }
  translate(op, [&] {
    return cx::castKernels(m).encode(in.data_ptr<float>(),
                                     reinterpret_cast<uint16_t*>(out.data_ptr()), in.numel(),
                                     static_cast<float>(scale), torchParallel());
  });
  return out;
}

// The payload of a cast method's decode, checked and contiguous.
at::Tensor castPayload(const at::Tensor& payload, double scale, Method m, const char* op) {
  checkScale(scale, op);
  TORCH_CHECK_TYPE(payload.scalar_type() == ops::payloadType(m), "distx::", op, ": expected a ",
                   ops::payloadType(m), " payload, got ", payload.scalar_type());
  return payload.contiguous();
}

at::Tensor castDecode(const at::Tensor& payload, double scale, Method m, const char* op) {
  const at::Tensor in = castPayload(payload, scale, m, op);
  at::Tensor out = at::empty(in.sizes(), in.options().dtype(at::kFloat));
  if (onCuda(in)) {
    cudaCodecOps().castDecode(in, out, static_cast<float>(scale), m, op);
    return out;
  }
  translate(op, [&] {
    cx::castKernels(m).decode(reinterpret_cast<const uint16_t*>(in.data_ptr()),
                              out.data_ptr<float>(), in.numel(), static_cast<float>(scale),
                              torchParallel());
    return 0;
  });
  return out;
}

at::Tensor fp16Encode(const at::Tensor& x, double scale) {
  return castEncode(x, scale, Method::kFp16, "fp16_encode");
}
at::Tensor fp16Decode(const at::Tensor& payload, double scale) {
  return castDecode(payload, scale, Method::kFp16, "fp16_decode");
}
at::Tensor bf16Encode(const at::Tensor& x, double scale) {
  return castEncode(x, scale, Method::kBf16, "bf16_encode");
}
at::Tensor bf16Decode(const at::Tensor& payload, double scale) {
  return castDecode(payload, scale, Method::kBf16, "bf16_decode");
}

void checkOut(const at::Tensor& out, const at::Tensor& payload, int64_t numel, const char* op) {
  TORCH_CHECK_TYPE(out.scalar_type() == at::kFloat, "distx::", op, ": out must be float32, got ",
                   out.scalar_type());
  TORCH_CHECK_VALUE(out.is_contiguous(), "distx::", op, ": out must be contiguous");
  TORCH_CHECK_VALUE(out.numel() == numel, "distx::", op, ": out has ", out.numel(),
                    " elements, expected ", numel);
  TORCH_CHECK_VALUE(out.device() == payload.device(), "distx::", op, ": out is on ", out.device(),
                    ", the payload on ", payload.device());
}

at::Tensor castDecodeInto(const at::Tensor& payload, at::Tensor& out, double scale, Method m,
                          const char* op) {
  const at::Tensor in = castPayload(payload, scale, m, op);
  checkOut(out, in, in.numel(), op);
  if (onCuda(in)) return cudaCodecOps().castDecodeInto(in, out, static_cast<float>(scale), m, op);
  const auto* src = reinterpret_cast<const uint16_t*>(in.data_ptr());
  const cx::CastKernels& k = cx::castKernels(m);
  const size_t bad =
      translate(op, [&] { return k.countNonFinite(src, in.numel(), torchParallel()); });
  if (bad == 0) {
    translate(op, [&] {
      k.decode(src, out.data_ptr<float>(), in.numel(), static_cast<float>(scale), torchParallel());
      return 0;
    });
  }
  return at::scalar_tensor(static_cast<int64_t>(bad), in.options().dtype(at::kLong));
}

at::Tensor fp16DecodeInto(const at::Tensor& payload, at::Tensor& out, double scale) {
  return castDecodeInto(payload, out, scale, Method::kFp16, "fp16_decode_into");
}
at::Tensor bf16DecodeInto(const at::Tensor& payload, at::Tensor& out, double scale) {
  return castDecodeInto(payload, out, scale, Method::kBf16, "bf16_decode_into");
}

// ---------------------------------------------------------------- top-k

at::Tensor topkRun(const at::Tensor& x, float* residual, int64_t k, const char* op) {
  const at::Tensor in = floatInput(x, op);
  const int64_t n = in.numel();
  TORCH_CHECK_VALUE(k >= 0 && k <= n, "distx::", op, ": k = ", k, " must be in [0, ", n, "]");
  at::Tensor pairs = at::empty({k, 2}, in.options().dtype(at::kInt));
  if (onCuda(in)) {
    cudaCodecOps().topkEncode(in, residual, k, pairs, op);
    return pairs;
  }
  translate(op, [&] {
    return cx::encodeTopK(in.data_ptr<float>(), residual, n, k, 1.0f, pairs.data_ptr<int32_t>(),
                          torchParallel());
  });
  return pairs;
}

at::Tensor topkEncode(const at::Tensor& x, int64_t k) {
  return topkRun(x, nullptr, k, "topk_encode");
}

at::Tensor topkEncodeEf(const at::Tensor& grad, at::Tensor& residual, int64_t k) {
  const char* op = "topk_encode_ef";
  TORCH_CHECK_TYPE(residual.scalar_type() == at::kFloat, "distx::", op,
                   ": the residual must be float32, got ", residual.scalar_type());
  TORCH_CHECK_VALUE(residual.is_contiguous(), "distx::", op, ": the residual must be contiguous");
  TORCH_CHECK_VALUE(residual.numel() == grad.numel(), "distx::", op, ": the residual has ",
                    residual.numel(), " elements, the gradient ", grad.numel());
  TORCH_CHECK_VALUE(residual.device() == grad.device(), "distx::", op, ": the residual is on ",
                    residual.device(), ", the gradient on ", grad.device());
  return topkRun(grad, residual.data_ptr<float>(), k, op);
}

void topkDecodeTo(const at::Tensor& payload, at::Tensor& out, double scale, const char* op) {
  checkScale(scale, op);
  TORCH_CHECK_TYPE(payload.scalar_type() == at::kInt, "distx::", op,
                   ": expected an int32 payload, got ", payload.scalar_type());
  TORCH_CHECK_VALUE(payload.dim() >= 1 && payload.size(-1) == 2, "distx::", op,
                    ": expected a payload of shape [..., 2], got ", payload.sizes());
  const at::Tensor in = payload.contiguous();
  checkOut(out, in, out.numel(), op);
  const size_t count = static_cast<size_t>(in.numel() / 2);
  const size_t numel = static_cast<size_t>(out.numel());
  if (onCuda(in)) {
    cudaCodecOps().topkDecode(in, out, static_cast<float>(scale), op);
    return;
  }
  translate(op, [&] {
    cx::decodeTopK(in.data_ptr<int32_t>(), count, numel, static_cast<float>(scale),
                   out.data_ptr<float>(), /*accumulate=*/false, torchParallel());
    return 0;
  });
}

at::Tensor topkDecode(const at::Tensor& payload, int64_t numel, double scale) {
  TORCH_CHECK_VALUE(numel >= 0, "distx::topk_decode: numel must be >= 0, got ", numel);
  at::Tensor out = at::empty({numel}, payload.options().dtype(at::kFloat));
  topkDecodeTo(payload, out, scale, "topk_decode");
  return out;
}

void topkDecodeInto(const at::Tensor& payload, at::Tensor& out, double scale) {
  topkDecodeTo(payload, out, scale, "topk_decode_into");
}

}  // namespace
}  // namespace distx

TORCH_LIBRARY(distx, m) {
  m.def("fp16_encode(Tensor x, float scale=1.0) -> Tensor");
  m.def("fp16_decode(Tensor payload, float scale=1.0) -> Tensor");
  m.def("bf16_encode(Tensor x, float scale=1.0) -> Tensor");
  m.def("bf16_decode(Tensor payload, float scale=1.0) -> Tensor");
  m.def("topk_encode(Tensor x, int k) -> Tensor");
  m.def("topk_encode_ef(Tensor grad, Tensor(a!) residual, int k) -> Tensor");
  m.def("topk_decode(Tensor payload, int numel, float scale=1.0) -> Tensor");
  m.def("fp16_decode_into(Tensor payload, Tensor(a!) out, float scale=1.0) -> Tensor");
  m.def("bf16_decode_into(Tensor payload, Tensor(a!) out, float scale=1.0) -> Tensor");
  m.def("topk_decode_into(Tensor payload, Tensor(a!) out, float scale=1.0) -> ()");
}

#define DISTX_IMPL_ALL(m)                             \
  m.impl("fp16_encode", &distx::fp16Encode);          \
  m.impl("fp16_decode", &distx::fp16Decode);          \
  m.impl("bf16_encode", &distx::bf16Encode);          \
  m.impl("bf16_decode", &distx::bf16Decode);          \
  m.impl("topk_encode", &distx::topkEncode);          \
  m.impl("topk_encode_ef", &distx::topkEncodeEf);     \
  m.impl("topk_decode", &distx::topkDecode);          \
  m.impl("fp16_decode_into", &distx::fp16DecodeInto); \
  m.impl("bf16_decode_into", &distx::bf16DecodeInto); \
  m.impl("topk_decode_into", &distx::topkDecodeInto)

TORCH_LIBRARY_IMPL(distx, CPU, m) {
  DISTX_IMPL_ALL(m);
}

// Not differentiable: outputs never require grad, and autograd says nothing.
TORCH_LIBRARY_IMPL(distx, Autograd, m) {
  for (const char* op :
       {"fp16_encode", "fp16_decode", "bf16_encode", "bf16_decode", "topk_encode", "topk_encode_ef",
        "topk_decode", "fp16_decode_into", "bf16_decode_into", "topk_decode_into"}) {
    m.impl(op, torch::CppFunction::makeFallthrough());
  }
}

#ifdef DISTX_WITH_CUDA
TORCH_LIBRARY_IMPL(distx, CUDA, m) {
  DISTX_IMPL_ALL(m);
}
#endif
