// What the fp16 and bf16 CPU cast codecs share (internal to compression/):
// each file picks its kernels for this CPU once (CastLoops), and these run a
// kernel over the chunks of a Parallel, summing the per-chunk overflow
// counts; one loop counts the NaN/inf codes of both formats. The encode and
// decode kernels, and their vector loops, stay in fp16.cpp and bf16.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compression/parallel.h"

namespace distx {
namespace compression {

// Kernels over one chunk [0, n); an encoder returns the chunk's overflow count (cast.h).
using EncodeKernel = size_t (*)(const float* src, uint16_t* dst, size_t n, float scale);
using DecodeKernel = void (*)(const uint16_t* src, float* dst, size_t n, float scale);

// The kernels this CPU runs for one format; `name` says which (fp16KernelName()).
struct CastLoops {
  const char* name;
  EncodeKernel encode;
  DecodeKernel decode;
};

size_t encodeChunks(EncodeKernel encode, const float* src, uint16_t* dst, size_t n, float scale,
                    const Parallel& par);
void decodeChunks(DecodeKernel decode, const uint16_t* src, float* dst, size_t n, float scale,
                  const Parallel& par);

// Number of codes whose exponent bits (`expMask`: 0x7c00 for fp16, 0x7f80 for
// bf16) are all set: the NaN/inf codes of either format.
size_t countExpAllOnes(const uint16_t* src, size_t n, uint16_t expMask, const Parallel& par);

}  // namespace compression
}  // namespace distx
