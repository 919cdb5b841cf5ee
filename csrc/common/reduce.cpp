#include "common/reduce.h"

#include <algorithm>
#include <complex>
#include <cstdint>

#include "common/error.h"
#include "common/reduce_lowp.h"

namespace distx {
namespace {

template <typename T, typename F>
void apply(void* dst, const void* src, size_t n, F f) {
  T* __restrict d = static_cast<T*>(dst);
  const T* __restrict s = static_cast<const T*>(src);
  for (size_t i = 0; i < n; ++i)
    d[i] = f(d[i], s[i]);
}

// Arithmetic types (float, double, integers).
template <typename T>
void reduceArith(void* dst, const void* src, size_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return apply<T>(dst, src, n, [](T a, T b) { return T(a + b); });
    case ReduceOp::kProduct:
      return apply<T>(dst, src, n, [](T a, T b) { return T(a * b); });
    case ReduceOp::kMin:
      return apply<T>(dst, src, n, [](T a, T b) { return b < a ? b : a; });
    case ReduceOp::kMax:
      return apply<T>(dst, src, n, [](T a, T b) { return a < b ? b : a; });
    default:
      break;
  }
  if constexpr (std::is_integral_v<T>) {
    switch (op) {
      case ReduceOp::kBAnd:
        return apply<T>(dst, src, n, [](T a, T b) { return T(a & b); });
      case ReduceOp::kBOr:
        return apply<T>(dst, src, n, [](T a, T b) { return T(a | b); });
      case ReduceOp::kBXor:
        return apply<T>(dst, src, n, [](T a, T b) { return T(a ^ b); });
      default:
        break;
    }
  }
}

void reduceBool(void* dst, const void* src, size_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kMax:
    case ReduceOp::kBOr:
      return apply<uint8_t>(dst, src, n, [](uint8_t a, uint8_t b) { return uint8_t(a | b); });
    case ReduceOp::kProduct:
    case ReduceOp::kMin:
    case ReduceOp::kBAnd:
      return apply<uint8_t>(dst, src, n, [](uint8_t a, uint8_t b) { return uint8_t(a & b); });
    case ReduceOp::kBXor:
      return apply<uint8_t>(dst, src, n, [](uint8_t a, uint8_t b) { return uint8_t(a ^ b); });
    default:
      break;
  }
}

template <typename C>
void reduceComplex(void* dst, const void* src, size_t n, ReduceOp op) {
  if (op == ReduceOp::kSum || op == ReduceOp::kAvg)
    return apply<C>(dst, src, n, [](C a, C b) { return a + b; });
  if (op == ReduceOp::kProduct) return apply<C>(dst, src, n, [](C a, C b) { return a * b; });
}

template <typename T>
void divide(void* data, size_t n, int divisor) {
  T* d = static_cast<T*>(data);
  if constexpr (std::is_floating_point_v<T>) {
    const T inv = T(1) / T(divisor);
    for (size_t i = 0; i < n; ++i)
      d[i] = d[i] * inv;
  } else {
    for (size_t i = 0; i < n; ++i)
      d[i] = static_cast<T>(d[i] / divisor);
  }
}

}  // namespace

bool reduceSupported(DType dt, ReduceOp op) {
  const bool bitwise = op == ReduceOp::kBAnd || op == ReduceOp::kBOr || op == ReduceOp::kBXor;
  switch (dt) {
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kFloat16:
    case DType::kBFloat16:
      return !bitwise;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64:
      return true;
    case DType::kBool:
      return op != ReduceOp::kAvg;
    case DType::kComplex64:
    case DType::kComplex128:
      return op == ReduceOp::kSum || op == ReduceOp::kAvg || op == ReduceOp::kProduct;
  }
  return false;
}

void reduceInto(void* dst, const void* src, size_t count, DType dt, ReduceOp op) {
  DISTX_CHECK(reduceSupported(dt, op), Unsupported, "reduce op ", reduceOpName(op),
              " is not supported for dtype ", dtypeName(dt));
  switch (dt) {
    case DType::kFloat32:
      return reduceArith<float>(dst, src, count, op);
    case DType::kFloat64:
      return reduceArith<double>(dst, src, count, op);
    case DType::kFloat16:  // widened to float, reduced, rounded back (reduce_lowp.h)
      return lowp::reduceHalf(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), count,
                              op, lowp::bestKernel());
    case DType::kBFloat16:
      return lowp::reduceBf16(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), count,
                              op, lowp::bestKernel());
    case DType::kInt8:
      return reduceArith<int8_t>(dst, src, count, op);
    case DType::kUInt8:
      return reduceArith<uint8_t>(dst, src, count, op);
    case DType::kInt16:
      return reduceArith<int16_t>(dst, src, count, op);
    case DType::kInt32:
      return reduceArith<int32_t>(dst, src, count, op);
    case DType::kInt64:
      return reduceArith<int64_t>(dst, src, count, op);
    case DType::kBool:
      return reduceBool(dst, src, count, op);
    case DType::kComplex64:
      return reduceComplex<std::complex<float>>(dst, src, count, op);
    case DType::kComplex128:
      return reduceComplex<std::complex<double>>(dst, src, count, op);
  }
}

void finishAvg(void* data, size_t count, DType dt, int divisor) {
  switch (dt) {
    case DType::kFloat32:
      return divide<float>(data, count, divisor);
    case DType::kFloat64:
      return divide<double>(data, count, divisor);
    case DType::kFloat16:
      return lowp::divideHalf(static_cast<uint16_t*>(data), count, divisor, lowp::bestKernel());
    case DType::kBFloat16:
      return lowp::divideBf16(static_cast<uint16_t*>(data), count, divisor, lowp::bestKernel());
    case DType::kInt8:
      return divide<int8_t>(data, count, divisor);
    case DType::kUInt8:
      return divide<uint8_t>(data, count, divisor);
    case DType::kInt16:
      return divide<int16_t>(data, count, divisor);
    case DType::kInt32:
      return divide<int32_t>(data, count, divisor);
    case DType::kInt64:
      return divide<int64_t>(data, count, divisor);
    case DType::kComplex64: {
      auto* d = static_cast<std::complex<float>*>(data);
      for (size_t i = 0; i < count; ++i)
        d[i] /= static_cast<float>(divisor);
      return;
    }
    case DType::kComplex128: {
      auto* d = static_cast<std::complex<double>*>(data);
      for (size_t i = 0; i < count; ++i)
        d[i] /= static_cast<double>(divisor);
      return;
    }
    case DType::kBool:
      break;
  }
  throw Unsupported(detail::concat("AVG is not supported for dtype ", dtypeName(dt)));
}

}  // namespace distx
