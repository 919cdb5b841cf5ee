// Boundary checks and type translation between torch and the torch-free core.
// Every check raises the Python exception a user expects:
//   ValueError  - wrong device, length, size, rank, layout
//   TypeError   - unsupported dtype, mismatched dtypes, op not defined for a dtype
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include <string>
#include <vector>

#include "common/dtype.h"

namespace distx {

DType toDType(at::ScalarType st, const char* op);
// The inverse (TypeError for a DType torch has no name for).
at::ScalarType toScalarType(DType dt);

// Checks `t` can take part in `op` (CPU or CUDA, strided, dtype known); which
// device serves the call is Note [Device dispatch]'s business.
void checkTensor(const at::Tensor& t, const char* op);

// Checks a list holds exactly one tensor and returns it.
const at::Tensor& singleTensor(const std::vector<at::Tensor>& tensors, const char* op);

// Checks every tensor of `ts` matches `ref`'s dtype (TypeError) and numel (ValueError).
void checkSameTypeAndSize(const std::vector<at::Tensor>& ts, const at::Tensor& ref, const char* op);

struct ReduceSpec {
  ReduceOp op;
  bool preMul = false;
  double factor = 1.0;
};
ReduceSpec toReduceOp(const c10d::ReduceOp& op, at::ScalarType dtype, const char* opName);

}  // namespace distx
