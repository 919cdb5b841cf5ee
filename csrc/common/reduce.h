// Element-wise reduction kernels used by every reducing algorithm (CPU).
#pragma once

#include <cstddef>

#include "common/dtype.h"

namespace distx {

// dst[i] = op(dst[i], src[i]) for i < count. AVG reduces as SUM; callers divide
// once at the end with finishAvg(). Throws Unsupported for a pair that
// reduceSupported() rejects.
void reduceInto(void* dst, const void* src, size_t count, DType dt, ReduceOp op);

// data[i] /= divisor (integers: truncating division, like NCCL's ncclAvg).
void finishAvg(void* data, size_t count, DType dt, int divisor);

}  // namespace distx
