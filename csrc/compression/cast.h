// fp16 / bf16 cast codecs: element-wise, round to nearest even, with a scale
// folded in so the DDP hook can pre-divide by the world size in the same pass.
//
// Overflow guard. An element overflows when x is finite but x*scale rounds
// beyond the target's largest finite value, so its code is +/-inf. The encoders
// count such elements; they never clamp. Infinities then propagate through the
// sum, so every rank sees the same non-finite result after the all-reduce and
// can agree, without another message, to redo that bucket densely in fp32 (the
// "fall back" choice; torch_distx.hooks does this). Non-finite inputs are
// encoded as +/-inf or a quiet NaN and are not counted as overflow.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compression/method.h"
#include "compression/parallel.h"

namespace distx {
namespace compression {

// dst[i] = fp16(src[i] * scale); returns the number of overflowed elements.
size_t encodeFp16(const float* src, uint16_t* dst, size_t n, float scale,
                  const Parallel& par = defaultParallel());
// dst[i] = float(src[i]) * scale.
void decodeFp16(const uint16_t* src, float* dst, size_t n, float scale,
                const Parallel& par = defaultParallel());

// Same for bfloat16 (fp32's exponent range: overflow needs |x*scale| >= ~3.39e38).
size_t encodeBf16(const float* src, uint16_t* dst, size_t n, float scale,
                  const Parallel& par = defaultParallel());
void decodeBf16(const uint16_t* src, float* dst, size_t n, float scale,
                const Parallel& par = defaultParallel());

// Number of NaN/inf codes in an fp16 / bf16 payload (a guarded decode checks
// this first and leaves its output untouched when it is not zero).
size_t countNonFiniteFp16(const uint16_t* src, size_t n, const Parallel& par = defaultParallel());
size_t countNonFiniteBf16(const uint16_t* src, size_t n, const Parallel& par = defaultParallel());

// Which fp16 kernel this CPU runs: "avx512f" (16 lanes), "f16c" (8 lanes) or "scalar".
const char* fp16KernelName();

// The CPU cast kernels of one method (Note [Codec vocabulary]): every
// fp16-or-bf16 site dispatches through this table instead of choosing between
// the functions above itself.
struct CastKernels {
  size_t (*encode)(const float*, uint16_t*, size_t, float, const Parallel&);
  void (*decode)(const uint16_t*, float*, size_t, float, const Parallel&);
  size_t (*countNonFinite)(const uint16_t*, size_t, const Parallel&);
};
// InvalidArgument unless isCast(m).
const CastKernels& castKernels(Method m);

}  // namespace compression
}  // namespace distx
