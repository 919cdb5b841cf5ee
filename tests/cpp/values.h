// Reading and writing any DType element as a double, for closed-form test inputs.
#pragma once

#include <complex>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/dtype.h"
#include "common/half.h"

namespace distx::testing {

inline void put(DType dt, void* p, size_t i, double v) {
  switch (dt) {
    case DType::kFloat32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      break;
    case DType::kFloat64:
      static_cast<double*>(p)[i] = v;
      break;
    case DType::kFloat16:
      static_cast<uint16_t*>(p)[i] = floatToHalf(static_cast<float>(v));
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(p)[i] = floatToBf16(static_cast<float>(v));
      break;
    case DType::kInt8:
      static_cast<int8_t*>(p)[i] = static_cast<int8_t>(v);
      break;
    case DType::kUInt8:
      static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v);
      break;
    case DType::kInt16:
      static_cast<int16_t*>(p)[i] = static_cast<int16_t>(v);
      break;
    case DType::kInt32:
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v);
      break;
    case DType::kInt64:
      static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v);
      break;
    case DType::kBool:
      static_cast<uint8_t*>(p)[i] = v != 0;
      break;
    case DType::kComplex64:
      static_cast<std::complex<float>*>(p)[i] = {static_cast<float>(v), 0.f};
      break;
    case DType::kComplex128:
      static_cast<std::complex<double>*>(p)[i] = {v, 0.0};
      break;
  }
}

inline double get(DType dt, const void* p, size_t i) {
  switch (dt) {
    case DType::kFloat32:
      return static_cast<const float*>(p)[i];
    case DType::kFloat64:
      return static_cast<const double*>(p)[i];
    case DType::kFloat16:
      return halfToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kBFloat16:
      return bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kInt8:
      return static_cast<const int8_t*>(p)[i];
    case DType::kUInt8:
      return static_cast<const uint8_t*>(p)[i];
    case DType::kInt16:
      return static_cast<const int16_t*>(p)[i];
    case DType::kInt32:
      return static_cast<const int32_t*>(p)[i];
    case DType::kInt64:
      return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DType::kBool:
      return static_cast<const uint8_t*>(p)[i];
    case DType::kComplex64:
      return static_cast<const std::complex<float>*>(p)[i].real();
    case DType::kComplex128:
      return static_cast<const std::complex<double>*>(p)[i].real();
  }
  return 0;
}

// Rounds v through dtype dt (what storing it would give).
inline double roundTrip(DType dt, double v) {
  uint8_t buf[16];
  put(dt, buf, 0, v);
  return get(dt, buf, 0);
}

}  // namespace distx::testing
