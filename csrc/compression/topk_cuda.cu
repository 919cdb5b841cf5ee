// CUDA twin of top-k (topk.h): the same total order (|a| bits, then index), so
// the same pairs, residual and payload layout as the CPU kernel.
//
// Schedule: radix select in three histogram rounds over the 31-bit magnitude
// key (bits 30..20, 19..10, 9..0); after the last round the threshold key t and
// the number m of keys equal to t that are taken are exact. Then each block
// counts keys > t and == t in its tile, one small kernel scans those counts
// into output offsets and tie quotas, and each block writes its tile's pairs in
// index order with two block-wide scans per sub-tile. a = x*scale + r uses
// __fmul_rn/__fadd_rn (no FMA contraction) to match the CPU bit for bit.
#include <cuda_runtime.h>

#include <vector>

#include "common/error.h"
#include "compression/cuda_kernels.h"

namespace distx {
namespace compression {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 16;  // per thread per tile
constexpr size_t kTile = size_t{kThreads} * kItems;
constexpr int kBins = 2048;  // round 1: 11 bits; rounds 2 and 3: 10 bits
constexpr uint32_t kNonFiniteKey = 0x7f800000u;

struct Round {
  int shift;  // bin = (key >> shift) & (bins - 1)
  int bins;
  int matchShift;  // only keys with key >> matchShift == prefix count (round 1: all)
};
constexpr Round kRounds[3] = {{20, 2048, 31}, {10, 1024, 20}, {0, 1024, 10}};

void check(cudaError_t err, const char* what) {
  DISTX_CHECK(err == cudaSuccess, TransportError, "top-k ", what, ": ", cudaGetErrorString(err));
}

__device__ uint32_t keyOf(float a) {
  return __float_as_uint(a) & 0x7fffffffu;
}

__device__ float entry(const float* x, const float* residual, size_t i, float scale) {
  return residual ? residual[i] : __fmul_rn(x[i], scale);
}

__global__ void combineKernel(const float* x, float* residual, size_t n, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    residual[i] = __fadd_rn(__fmul_rn(x[i], scale), residual[i]);
  }
}

__global__ void histKernel(const float* x, const float* residual, size_t n, float scale,
                           Round round, uint32_t prefix, uint32_t* hist) {
  __shared__ uint32_t local[kBins];
  for (int b = threadIdx.x; b < round.bins; b += blockDim.x)
    local[b] = 0;
  __syncthreads();
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t key = keyOf(entry(x, residual, i, scale));
    if (round.matchShift >= 31 || (key >> round.matchShift) == prefix) {
      atomicAdd(&local[(key >> round.shift) & (round.bins - 1)], 1u);
    }
  }
  __syncthreads();
  for (int b = threadIdx.x; b < round.bins; b += blockDim.x) {
    if (local[b]) atomicAdd(&hist[b], local[b]);
  }
}

__global__ void countKernel(const float* x, const float* residual, size_t n, float scale,
                            uint32_t threshold, uint32_t* greater, uint32_t* equal) {
  __shared__ uint32_t g, e;
  if (threadIdx.x == 0) g = e = 0;
  __syncthreads();
  const size_t begin = blockIdx.x * kTile, end = min(n, begin + kTile);
  uint32_t myG = 0, myE = 0;
  for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const uint32_t key = keyOf(entry(x, residual, i, scale));
    myG += key > threshold;
    myE += key == threshold;
  }
  atomicAdd(&g, myG);
  atomicAdd(&e, myE);
  __syncthreads();
  if (threadIdx.x == 0) {
    greater[blockIdx.x] = g;
    equal[blockIdx.x] = e;
  }
}

// One thread: blocks are few (n / 4096) and this runs once per call.
__global__ void offsetsKernel(const uint32_t* greater, const uint32_t* equal, size_t blocks,
                              uint32_t ties, uint32_t* outBegin, uint32_t* quota) {
  uint32_t out = 0, tiesBefore = 0;
  for (size_t b = 0; b < blocks; ++b) {
    const uint32_t left = ties > tiesBefore ? ties - tiesBefore : 0;
    quota[b] = min(left, equal[b]);
    outBegin[b] = out;
    out += greater[b] + quota[b];
    tiesBefore += equal[b];
  }
}

// Exclusive block-wide scan of v; *total gets the block sum.
__device__ uint32_t blockScan(uint32_t v, uint32_t* total) {
  __shared__ uint32_t warpSums[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warpSums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    uint32_t s = lane < kThreads / 32 ? warpSums[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += y;
    }
    if (lane < kThreads / 32) warpSums[lane] = s;
  }
  __syncthreads();
  const uint32_t result = (warp ? warpSums[warp - 1] : 0) + x - v;
  *total = warpSums[kThreads / 32 - 1];
  __syncthreads();  // warpSums is reused by the next call
  return result;
}

__global__ void writeKernel(const float* x, float* residual, size_t n, float scale,
                            uint32_t threshold, const uint32_t* outBegin, const uint32_t* quota,
                            int32_t* pairs) {
  const size_t begin = blockIdx.x * kTile;
  uint32_t out = outBegin[blockIdx.x], tiesLeft = quota[blockIdx.x];
  for (int it = 0; it < kItems; ++it) {
    const size_t i = begin + size_t(it) * kThreads + threadIdx.x;
    float a = 0.0f;
    uint32_t key = 0;
    if (i < n) {
      a = entry(x, residual, i, scale);
      key = keyOf(a);
    }
    const bool tie = i < n && key == threshold;
    uint32_t tieCount;
    const uint32_t tieRank = blockScan(tie, &tieCount);
    const bool take = i < n && (key > threshold || (tie && tieRank < tiesLeft));
    uint32_t takeCount;
    const uint32_t pos = out + blockScan(take, &takeCount);
    if (take) {
      pairs[2 * size_t(pos)] = static_cast<int32_t>(i);
      pairs[2 * size_t(pos) + 1] = static_cast<int32_t>(__float_as_uint(a));
    }
    if (residual && i < n && (take || key >= kNonFiniteKey)) residual[i] = 0.0f;
    out += takeCount;
    tiesLeft -= min(tiesLeft, tieCount);
  }
}

__global__ void dropNonFiniteKernel(float* residual, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    if (keyOf(residual[i]) >= kNonFiniteKey) residual[i] = 0.0f;
  }
}

__global__ void decodeKernel(const int32_t* pairs, size_t count, size_t n, float scale,
                             float* dense) {
  for (size_t j = blockIdx.x * size_t(blockDim.x) + threadIdx.x; j < count;
       j += size_t(gridDim.x) * blockDim.x) {
    const int32_t idx = pairs[2 * j];
    if (idx >= 0 && static_cast<size_t>(idx) < n) {
      atomicAdd(&dense[idx], __fmul_rn(__int_as_float(pairs[2 * j + 1]), scale));
    }
  }
}

int gridFor(size_t n) {
  const size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 2048 ? (blocks ? blocks : 1) : 2048);
}

size_t tiles(size_t n) {
  return (n + kTile - 1) / kTile;
}

}  // namespace

size_t topkScratchBytes(size_t n) {
  return (kBins + 4 * tiles(n)) * sizeof(uint32_t);
}

size_t encodeTopK(const float* x, float* residual, size_t n, size_t k, float scale, int32_t* pairs,
                  void* scratch, void* streamPtr) {
  DISTX_CHECK(k <= n, InvalidArgument, "top-k: k = ", k, " exceeds the ", n, " elements");
  auto stream = static_cast<cudaStream_t>(streamPtr);
  if (n == 0) return 0;
  uint32_t* hist = static_cast<uint32_t*>(scratch);
  const size_t blocks = tiles(n);
  uint32_t* greater = hist + kBins;
  uint32_t* equal = greater + blocks;
  uint32_t* outBegin = equal + blocks;
  uint32_t* quota = outBegin + blocks;

  if (residual) combineKernel<<<gridFor(n), kThreads, 0, stream>>>(x, residual, n, scale);
  // Three rounds narrow the k-th largest key down to its exact value.
  std::vector<uint32_t> h(kBins);
  uint32_t prefix = 0;
  size_t need = k, nonFinite = 0;
  for (int r = 0; r < 3; ++r) {
    const Round round = kRounds[r];
    check(cudaMemsetAsync(hist, 0, round.bins * sizeof(uint32_t), stream), "memset");
    histKernel<<<gridFor(n), kThreads, 0, stream>>>(x, residual, n, scale, round, prefix, hist);
    check(cudaGetLastError(), "histogram");
    check(cudaMemcpyAsync(h.data(), hist, round.bins * sizeof(uint32_t), cudaMemcpyDeviceToHost,
                          stream),
          "copy");
    check(cudaStreamSynchronize(stream), "sync");
    if (r == 0) {
      for (int b = kNonFiniteKey >> 20; b < kBins; ++b)
        nonFinite += h[b];
      if (k == 0) {
        if (residual && nonFinite)
          dropNonFiniteKernel<<<gridFor(n), kThreads, 0, stream>>>(residual, n);
        check(cudaGetLastError(), "drop non-finite");
        return nonFinite;
      }
    }
    int bin = round.bins - 1;
    for (size_t above = 0; bin >= 0; --bin) {
      if (above + h[bin] >= need) {
        need -= above;
        break;
      }
      above += h[bin];
    }
    prefix = (prefix << (r == 0 ? 11 : 10)) | static_cast<uint32_t>(bin);
  }
  const uint32_t threshold = prefix;  // all 31 bits fixed; `need` ties at it are taken

  countKernel<<<blocks, kThreads, 0, stream>>>(x, residual, n, scale, threshold, greater, equal);
  offsetsKernel<<<1, 1, 0, stream>>>(greater, equal, blocks, static_cast<uint32_t>(need), outBegin,
                                     quota);
  writeKernel<<<blocks, kThreads, 0, stream>>>(x, residual, n, scale, threshold, outBegin, quota,
                                               pairs);
  check(cudaGetLastError(), "select");
  return nonFinite;
}

void decodeTopK(const int32_t* pairs, size_t segments, size_t segmentPairs, size_t n, float scale,
                float* dense, bool accumulate, void* streamPtr) {
  auto stream = static_cast<cudaStream_t>(streamPtr);
  if (!accumulate && n) check(cudaMemsetAsync(dense, 0, n * sizeof(float), stream), "memset");
  if (segmentPairs == 0) return;
  for (size_t s = 0; s < segments; ++s) {  // one launch per segment keeps payload order
    decodeKernel<<<gridFor(segmentPairs), kThreads, 0, stream>>>(pairs + 2 * s * segmentPairs,
                                                                 segmentPairs, n, scale, dense);
  }
  check(cudaGetLastError(), "decode");
}

}  // namespace cuda
}  // namespace compression
}  // namespace distx
