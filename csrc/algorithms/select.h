// Algorithm selection lives here and only here.
#pragma once

#include <cstddef>
#include <string>

#include "algorithms/algorithm.h"

namespace distx {

using AllreduceFn = void (*)(CollectiveContext&, void*, size_t, DType, ReduceOp);

struct AllreduceChoice {
  const char* name;
  AllreduceFn fn;
};

// Picks the all-reduce algorithm for `bytes` on `worldSize` ranks. `forced`
// (DISTX_ALGO) overrides the size rules; an unknown name is InvalidArgument.
AllreduceChoice selectAllreduce(size_t bytes, int worldSize, const std::string& forced);

// Largest all-reduce (bytes) that goes to recursive doubling on worldSize ranks.
size_t recursiveDoublingMaxBytes(int worldSize);

}  // namespace distx
