// Top-k sparsification with optional error feedback (DGC-style).
//
// Encode keeps the k entries of a = x*scale (+ residual) with the largest
// magnitude and emits them as k (int32 index, float32 value) pairs, stored as
// 2k int32 words [i0, bits(v0), i1, bits(v1), ...] with indices ascending.
// Payloads from several ranks concatenate into a valid payload; decode
// scatter-adds every pair, in payload order, into a dense tensor.
//
// Order: magnitude is compared on the bits of |a| as an unsigned integer, so
// NaN > +inf > every finite value, and equal magnitudes go to the lower index.
// The selection is therefore deterministic and independent of thread count.
//
// Error feedback (residual != nullptr): residual := a with the selected entries
// set to 0, so for every finite entry  sent + new residual == a  bit for bit,
// where a = fl(fl(x*scale) + old residual). Non-finite entries rank first, so a
// NaN/inf gradient reaches every rank's sum (as with a dense all-reduce, and an
// AMP GradScaler sees it); one that does not fit in k is dropped from the
// residual (set to 0) so it cannot poison later steps.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compression/parallel.h"

namespace distx {
namespace compression {

// k for a density ratio in [0, 1]: floor(ratio*n + 0.5), at least 1 when
// ratio > 0 and n > 0, at most n.
size_t topkCount(size_t n, double ratio);

// Bytes of one rank's payload for k pairs.
inline size_t topkPayloadBytes(size_t k) {
  return 8 * k;
}

// x: n floats; residual: n floats or nullptr; pairs: room for 2k int32. Needs
// k <= n <= INT32_MAX. Returns the number of non-finite entries of a.
size_t encodeTopK(const float* x, float* residual, size_t n, size_t k, float scale, int32_t* pairs,
                  const Parallel& par = defaultParallel());

// dense[idx] += value * scale for each of `count` pairs, in order (after
// zero-filling dense unless accumulate). Throws InvalidArgument for an index
// outside [0, n) before writing anything.
void decodeTopK(const int32_t* pairs, size_t count, size_t n, float scale, float* dense,
                bool accumulate, const Parallel& par = defaultParallel());

}  // namespace compression
}  // namespace distx
