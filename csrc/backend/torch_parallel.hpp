// The codecs' worker pool on the torch side: compression::Parallel over torch's
// intra-op thread pool (at::parallel_for), shared by the group switch
// (compressor.cpp) and the torch ops (python/ops_compression.cpp).
#pragma once

#include "compression/parallel.h"

namespace distx {

const compression::Parallel& torchParallel();

}  // namespace distx
