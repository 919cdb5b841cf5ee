// Micro-benchmark of the CPU reduction kernels (dst[i] = op(dst[i], src[i])):
// float32 and the fp16 / bf16 kernels (scalar and AVX2+F16C), in cache and
// from memory, with one core's memcpy bandwidth measured in the same run.
//
//   make bench-reduce            # builds build/cpp/distx_bench_reduce and runs it
//
// GB/s counts the bytes of one operand per second (n * element size / time);
// the kernel moves three times that (read dst and src, write dst). Medians of
// interleaved repetitions, with min and max.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/half.h"
#include "common/reduce.h"
#include "common/reduce_lowp.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Row {
  std::string name;
  std::function<void(void* dst, const void* src, size_t bytes)> run;
  std::vector<double> gbps;
};

}  // namespace

int main(int argc, char** argv) {
  using namespace distx;
  const int reps = argc > 1 ? std::atoi(argv[1]) : 15;
  std::vector<Row> rows = {
      {"memcpy (1 core)", [](void* d, const void* s, size_t b) { std::memcpy(d, s, b); }, {}},
      {"float32 sum",
       [](void* d, const void* s, size_t b) {
         reduceInto(d, s, b / 4, DType::kFloat32, ReduceOp::kSum);
       },
       {}},
  };
  for (auto k : {lowp::Kernel::kScalar, lowp::Kernel::kAvx2}) {
    if (!lowp::kernelAvailable(k)) continue;
    const std::string kn = lowp::kernelName(k);
    rows.push_back({"fp16 sum " + kn,
                    [k](void* d, const void* s, size_t b) {
                      lowp::reduceHalf(static_cast<uint16_t*>(d), static_cast<const uint16_t*>(s),
                                       b / 2, ReduceOp::kSum, k);
                    },
                    {}});
    rows.push_back({"bf16 sum " + kn,
                    [k](void* d, const void* s, size_t b) {
                      lowp::reduceBf16(static_cast<uint16_t*>(d), static_cast<const uint16_t*>(s),
                                       b / 2, ReduceOp::kSum, k);
                    },
                    {}});
  }
  std::printf("# distx reduction kernels, best kernel here: %s; GB/s of one operand\n",
              lowp::kernelName(lowp::bestKernel()));
  std::printf("%-24s %10s %10s %10s %10s\n", "kernel", "bytes", "median", "min", "max");
  for (size_t bytes : {size_t{64} << 10, size_t{64} << 20}) {
    // src[0] = x and src[1] = -x alternate, so dst stays near its start
    // value (no drift into overflow, which would time another branch mix).
    std::vector<uint16_t> dst(bytes / 2), src[2] = {dst, dst};
    std::vector<float> dst32(bytes / 4), src32[2] = {dst32, dst32};
    for (size_t i = 0; i < dst.size(); ++i) {
      const float x = static_cast<float>(i % 7 + 1) * 0.125f;
      for (int k = 0; k < 2; ++k)
        src[k][i] = floatToHalf(k ? -x : x);
      dst[i] = floatToHalf(1.5f);
    }
    for (size_t i = 0; i < dst32.size(); ++i) {
      const float x = static_cast<float>(i % 7 + 1) * 0.125f;
      src32[0][i] = x;
      src32[1][i] = -x;
      dst32[i] = 1.5f;
    }
    const size_t inner = std::max<size_t>(1, (size_t{256} << 20) / bytes);  // ~256 MiB per sample
    for (auto& r : rows)
      r.gbps.clear();
    for (int rep = 0; rep < reps; ++rep) {
      for (auto& r : rows) {  // interleaved: load changes hit every row alike
        const auto t0 = Clock::now();
        const bool f32 = r.name.rfind("float32", 0) == 0 || r.name.rfind("memcpy", 0) == 0;
        for (size_t i = 0; i < inner; ++i) {
          if (f32)
            r.run(dst32.data(), src32[i % 2].data(), bytes);
          else
            r.run(dst.data(), src[i % 2].data(), bytes);
        }
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        r.gbps.push_back(static_cast<double>(bytes) * inner / s / 1e9);
      }
    }
    for (auto& r : rows) {
      std::sort(r.gbps.begin(), r.gbps.end());
      std::printf("%-24s %10zu %10.2f %10.2f %10.2f\n", r.name.c_str(), bytes,
                  r.gbps[r.gbps.size() / 2], r.gbps.front(), r.gbps.back());
    }
  }
  return 0;
}
