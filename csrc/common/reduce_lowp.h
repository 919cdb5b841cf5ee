// fp16 / bf16 reduction kernels behind reduceInto() and finishAvg(): each
// element is widened to float, reduced in float and rounded back to nearest
// even (NaNs become the canonical quiet NaN with the result's sign), as NCCL
// and Gloo do. Two kernels with bit-identical results: a scalar loop (any CPU)
// and an x86-64 AVX2+F16C one (8 lanes, picked at run time). Internal to
// common/; tests and benchmarks name a kernel to compare them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

namespace distx::lowp {

enum class Kernel { kScalar, kAvx2 };

// The fastest kernel this CPU runs (kAvx2 needs AVX2 and F16C).
Kernel bestKernel();
bool kernelAvailable(Kernel k);
const char* kernelName(Kernel k);

// dst[i] = op(dst[i], src[i]); op is SUM/AVG (as SUM), PRODUCT, MIN or MAX.
void reduceHalf(uint16_t* dst, const uint16_t* src, size_t n, ReduceOp op, Kernel k);
void reduceBf16(uint16_t* dst, const uint16_t* src, size_t n, ReduceOp op, Kernel k);

// data[i] = round(float(data[i]) / divisor).
void divideHalf(uint16_t* data, size_t n, int divisor, Kernel k);
void divideBf16(uint16_t* data, size_t n, int divisor, Kernel k);

}  // namespace distx::lowp
