#include "algorithms/algorithm.h"

namespace distx {

uint8_t* CollectiveContext::scratchBytes(size_t bytes) {
  if (!scratch) return nullptr;
  if (scratch->size() < bytes) scratch->resize(bytes);
  return scratch->data();
}

}  // namespace distx
