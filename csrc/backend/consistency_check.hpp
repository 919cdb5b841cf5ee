// DISTX_DEBUG=1: before a collective runs, every rank all-gathers a small
// signature of its call (op, dtype, element count, shapes) over control tags
// and compares; a mismatch fails the collective on every rank with a message
// listing what each rank called, instead of a hang or corrupted memory.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <cstdint>
#include <vector>

#include "algorithms/algorithm.h"

namespace distx {

struct OpSignature {
  int32_t opType = -1;
  int32_t dtype = -1;
  int64_t numel = -1;  // -1: not compared (root- or split-dependent outputs)
  char op[24] = {0};
  char shapes[88] = {0};
};

OpSignature makeSignature(c10d::OpType type, const char* opName,
                          const std::vector<at::Tensor>& outputs);

// Throws InvalidArgument when the ranks' signatures differ.
void checkConsistency(CollectiveContext& ctx, const OpSignature& mine);

}  // namespace distx
