// CUDA twins of cast.h and topk.h, built only when torch has CUDA (the .cu
// files). Same contracts and bit-identical results, except where noted.
// Torch-free: `stream` is a cudaStream_t; device pointers throughout; errors
// throw distx::TransportError with the CUDA message.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compression/method.h"

namespace distx {
namespace compression {
namespace cuda {

// overflow: a device counter the encoders add their overflow count to, or null.
void encodeFp16(const float* src, uint16_t* dst, size_t n, float scale,
                unsigned long long* overflow, void* stream);
// guard: a device counter, or null; when it is non-zero the decoders write nothing
// (the guarded decode of cast.h, without a host round trip).
void decodeFp16(const uint16_t* src, float* dst, size_t n, float scale,
                const unsigned long long* guard, void* stream);
void encodeBf16(const float* src, uint16_t* dst, size_t n, float scale,
                unsigned long long* overflow, void* stream);
void decodeBf16(const uint16_t* src, float* dst, size_t n, float scale,
                const unsigned long long* guard, void* stream);
// The CUDA cast kernels of one method (Note [Codec vocabulary]; the twin of
// castKernels in cast.h); InvalidArgument unless isCast(m).
struct CastKernels {
  void (*encode)(const float*, uint16_t*, size_t, float, unsigned long long*, void*);
  void (*decode)(const uint16_t*, float*, size_t, float, const unsigned long long*, void*);
  bool bf16;  // for countNonFinite
};
const CastKernels& castKernels(Method m);

// Adds the number of NaN/inf codes of a payload to *count (device).
void countNonFinite(const uint16_t* src, size_t n, bool bf16, unsigned long long* count,
                    void* stream);

// Device scratch encodeTopK needs for n elements.
size_t topkScratchBytes(size_t n);
// Same selection, order, residual update and payload as the CPU encodeTopK.
// Synchronises the stream (three small histogram read-backs); returns the
// number of non-finite entries.
size_t encodeTopK(const float* x, float* residual, size_t n, size_t k, float scale, int32_t* pairs,
                  void* scratch, void* stream);
// pairs holds `segments` runs of segmentPairs pairs; runs are applied one after
// another (payload order, as on the CPU) and the pairs of one run must have
// distinct indices, as encodeTopK's do. Indices outside [0, n) are skipped
// (the CPU version throws; checking here would cost a synchronisation).
void decodeTopK(const int32_t* pairs, size_t segments, size_t segmentPairs, size_t n, float scale,
                float* dense, bool accumulate, void* stream);

}  // namespace cuda
}  // namespace compression
}  // namespace distx
