// All-gather of several tensors at once: each rank packs the bytes of its
// inputs back to back into one block, and one ring all-gather moves the
// blocks. Used by all_gather_coalesced and all_gather_into_tensor_coalesced.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "algorithms/algorithm.h"

namespace distx {

struct PackedBlocks {
  at::Tensor buf;     // P blocks of `block` bytes, block r from rank r
  int64_t block = 0;  // sum of the inputs' nbytes (the same on every rank)
  // Bytes [pos, pos + n) of rank src's block, as a 1-D byte tensor. Byte views:
  // with mixed dtypes an input's offset need not be aligned to its element size.
  at::Tensor bytes(int src, int64_t pos, int64_t n) const {
    return buf.narrow(0, src * block + pos, n);
  }
};

PackedBlocks allgatherPacked(CollectiveContext& ctx, const std::vector<at::Tensor>& inputs);

// Copies `bytes` into `dst` (any strides; dst.nbytes() == bytes.numel()).
void copyBytesInto(const at::Tensor& dst, const at::Tensor& bytes);

}  // namespace distx
