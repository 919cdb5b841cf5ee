// Compiler hints shared by the CPU codec kernels (internal to compression/).
#pragma once

// DISTX_CLONES compiles a loop for AVX2 and for the baseline ISA and picks one
// at load time (GCC/Clang ifunc). The loops are written branch-free so both
// clones vectorise; results are bit-identical (no FMA contraction: the avx2
// clone does not enable fma). Not under ThreadSanitizer: the ifunc resolver
// would run, instrumented, before the TSan runtime is up (make test-tsan).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define DISTX_CLONES __attribute__((target_clones("avx2", "default")))
#define DISTX_X86_DISPATCH 1
#elif defined(__x86_64__) && defined(__linux__)
#define DISTX_CLONES
#define DISTX_X86_DISPATCH 1
#else
#define DISTX_CLONES
#define DISTX_X86_DISPATCH 0
#endif

namespace distx {
namespace compression {

// Elements per parallel chunk for streaming kernels: 64K floats = 256 KiB, so
// thread start-up is amortised and chunks stay out of each other's cache lines.
constexpr size_t kStreamGrain = size_t{1} << 16;

}  // namespace compression
}  // namespace distx
