// Element types and reduce operations as the algorithms see them. Torch-free:
// backend/ translates at::ScalarType and c10d::ReduceOp into these.
#pragma once

#include <cstddef>
#include <cstdint>

namespace distx {

enum class DType : uint8_t {
  kFloat32,
  kFloat64,
  kFloat16,
  kBFloat16,
  kInt8,
  kUInt8,
  kInt16,
  kInt32,
  kInt64,
  kBool,
  kComplex64,
  kComplex128,
};

enum class ReduceOp : uint8_t { kSum, kAvg, kProduct, kMin, kMax, kBAnd, kBOr, kBXor };

enum class Device : uint8_t { kCPU, kCUDA };

size_t dtypeSize(DType dt);
const char* dtypeName(DType dt);
const char* reduceOpName(ReduceOp op);
bool isFloating(DType dt);

// True when reduceInto() implements `op` for `dt`.
bool reduceSupported(DType dt, ReduceOp op);

}  // namespace distx
