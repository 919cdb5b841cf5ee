#include "backend/torch_parallel.hpp"

#include <ATen/Parallel.h>

namespace distx {

const compression::Parallel& torchParallel() {
  static const compression::Parallel par{static_cast<size_t>(at::get_num_threads()),
                                         [](size_t tasks, const std::function<void(size_t)>& task) {
                                           at::parallel_for(0, static_cast<int64_t>(tasks), 1,
                                                            [&](int64_t b, int64_t e) {
                                                              for (int64_t i = b; i < e; ++i)
                                                                task(static_cast<size_t>(i));
                                                            });
                                         }};
  return par;
}

}  // namespace distx
