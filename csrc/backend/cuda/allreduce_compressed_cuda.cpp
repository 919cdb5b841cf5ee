// Note [GPU compression]
// The group compression switch (Note [Compression switch]) on CUDA tensors: in
// a multi-host group the hierarchical all-reduce's inter-node stage runs the
// CUDA codecs (compression/cuda_kernels.h) on this rank's GPU shard; the NCCL
// stages inside the host stay exact. Only the codec payload crosses to the
// host (or, CUDA-aware, goes straight to UCX: Note [CUDA-aware rail]).
// A single-host group is all NCCL and is never compressed; the scope setting
// does not apply to CUDA tensors (NCCL inside the host is always exact).
//
// fp16 / bf16 (the schedule of allreduce_compressed_cast.cpp, on the GPU):
//   1. encode  the whole shard to 16 bits (GPU);
//   2. scatter segment p of every rank's codes to rank p (railScatterSegments);
//   3. reduce  rank p decodes the P copies of its segment and sums them in
//              float32 in rank order, then encodes the sum once (GPU);
//   4. gather  ring all-gather of the reduced codes; every rank counts the
//              non-finite codes (GPU, one read-back) and decodes them into the
//              shard, or, if any, redoes the stage dense on the untouched
//              float32 shard (fallbackNonFinite), as every rank sees the same
//              payload.
// Top-k with error feedback (allreduce_compressed_topk.cpp, on the GPU):
//   1. encode  a = shard + residual (device), the k largest |a| as (index,
//              value) pairs into this rank's block (encodeTopK, which reads
//              back three histograms), residual keeps the rest;
//   2. gather  ring all-gather of the P blocks;
//   3. decode  zero-fill and add the P blocks in rank order (GPU).
// Past density × rail ranks >= 1 the dense stage runs on shard + residual,
// which is flushed (fallbackDensity).
// Invariant: as on the CPU, every rank ends bit-identical: each reduced value
// is computed once, and every rank decodes the same bytes in the same order
// (top-k's decode adds distinct indices per block, one block after another).
// Cost: the CPU algorithms' wire bytes, plus device-host copies of the codes
// when staged. codecNanos is not counted for the GPU (kernels are async).
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "algorithms/compressed.h"
#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/rail_cuda.hpp"
#include "compression/cuda_kernels.h"
#include "compression/topk.h"

namespace distx {
namespace {

namespace cxc = compression::cuda;

int64_t len(size_t v) {
  return static_cast<int64_t>(v);
}

uint16_t* u16(const at::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<int16_t>());
}

void countCall(CompressionCounters& ctr, size_t count, size_t elemBytes, int P, int r) {
  ctr.calls.fetch_add(1, std::memory_order_relaxed);
  ctr.inputBytes.fetch_add(count * elemBytes, std::memory_order_relaxed);
  ctr.denseBytes.fetch_add(denseRingBytes(count, elemBytes, P, r), std::memory_order_relaxed);
}

}  // namespace

void railCompressedCast(CollectiveContext& rail, at::Tensor& x, ReduceOp op, bool bf16,
                        CompressionCounters& ctr, const RailWire& wire, const DenseRailFn& dense) {
  const int P = rail.size(), r = rail.rank();
  const size_t count = static_cast<size_t>(x.numel());
  countCall(ctr, count, sizeof(float), P, r);
  if (P == 1 || count == 0) return;
  const auto encode = bf16 ? cxc::encodeBf16 : cxc::encodeFp16;
  const auto decode = bf16 ? cxc::decodeBf16 : cxc::decodeFp16;
  void* s = wire.stream();
  const Segments seg{count, P};
  const size_t maxSeg = seg.size(0), mine = seg.size(r);
  const auto codes = x.options().dtype(at::kShort);
  float* data = x.data_ptr<float>();

  // 1-2. encode, scatter.
  at::Tensor own = at::empty({len(count)}, codes);
  encode(data, u16(own), count, 1.0f, nullptr, s);
  const at::Tensor ownWire = wire.twin(own);
  wire.out(own, ownWire);
  at::Tensor in = at::empty({len(P * maxSeg)}, codes);
  const at::Tensor inWire = wire.twin(in);
  railScatterSegments(rail, ownWire.data_ptr(), inWire.data_ptr(), seg, maxSeg, 2);
  wire.in(inWire, in);
  if (mine) {
    in.narrow(0, len(r * maxSeg), len(mine)).copy_(own.narrow(0, len(seg.offset(r)), len(mine)));
  }

  // 3. float32 sum of this rank's segment in rank order, encoded once.
  at::Tensor acc = at::empty({len(maxSeg)}, x.options());
  at::Tensor tmp = at::empty({len(maxSeg)}, x.options());
  decode(u16(in), acc.data_ptr<float>(), mine, 1.0f, nullptr, s);
  for (int q = 1; q < P; ++q) {
    decode(u16(in) + q * maxSeg, tmp.data_ptr<float>(), mine, 1.0f, nullptr, s);
    acc.narrow(0, 0, len(mine)).add_(tmp.narrow(0, 0, len(mine)));
  }
  const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(P) : 1.0f;
  at::Tensor out = at::zeros({len(P * maxSeg)}, codes);
  encode(acc.data_ptr<float>(), u16(out) + r * maxSeg, mine, scale, nullptr, s);

  // 4. all-gather, then decode unless a code is NaN/inf.
  const at::Tensor outWire = wire.twin(out);
  wire.out(out.narrow(0, len(r * maxSeg), len(maxSeg)),
           outWire.narrow(0, len(r * maxSeg), len(maxSeg)));
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = static_cast<uint8_t*>(outWire.data_ptr()) + p * maxSeg * 2;
  allgatherRing(rail, blocks, maxSeg * 2);
  wire.in(outWire, out);
  at::Tensor bad = at::zeros({1}, x.options().dtype(at::kLong));
  auto* badCount = reinterpret_cast<unsigned long long*>(bad.data_ptr<int64_t>());
  for (int p = 0; p < P; ++p)
    cxc::countNonFinite(u16(out) + p * maxSeg, seg.size(p), bf16, badCount, s);
  uint64_t sent = (count - mine) * 2 + static_cast<uint64_t>(P - 1) * maxSeg * 2;
  if (bad.item<int64_t>() == 0) {  // item() waits for the count: every rank decides alike
    for (int p = 0; p < P; ++p)
      decode(u16(out) + p * maxSeg, data + seg.offset(p), seg.size(p), 1.0f, nullptr, s);
  } else {
    ctr.fallbackNonFinite.fetch_add(1, std::memory_order_relaxed);
    dense(rail, x, op);
    sent += denseRingBytes(count, sizeof(float), P, r);
  }
  ctr.wireBytes.fetch_add(sent, std::memory_order_relaxed);
}

void railCompressedTopK(CollectiveContext& rail, at::Tensor& x, ReduceOp op, double ratio,
                        at::Tensor* residual, CompressionCounters& ctr, const RailWire& wire,
                        const DenseRailFn& dense) {
  const int P = rail.size(), r = rail.rank();
  const size_t count = static_cast<size_t>(x.numel());
  countCall(ctr, count, sizeof(float), P, r);
  if (P == 1 || count == 0) return;
  const size_t k = compression::topkCount(count, ratio);
  float* res = nullptr;
  if (residual) {
    if (!residual->defined() || residual->numel() != x.numel() ||
        residual->device() != x.device()) {
      *residual = at::zeros_like(x);  // a new bucket, or one whose size changed
    }
    res = residual->data_ptr<float>();
  }
  if (k * static_cast<size_t>(P) >= count) {
    ctr.fallbackDensity.fetch_add(1, std::memory_order_relaxed);
    if (res) {  // send what was held back, then start afresh
      x.add_(*residual);
      residual->zero_();
    }
    dense(rail, x, op);
    ctr.wireBytes.fetch_add(denseRingBytes(count, sizeof(float), P, r), std::memory_order_relaxed);
    return;
  }
  const size_t block = compression::topkPayloadBytes(k);  // 2k int32 words
  void* s = wire.stream();
  at::Tensor scratch = at::empty({len(cxc::topkScratchBytes(count))}, x.options().dtype(at::kByte));
  at::Tensor pairs = at::empty({len(2 * k * P)}, x.options().dtype(at::kInt));
  int32_t* mine = pairs.data_ptr<int32_t>() + 2 * k * r;
  cxc::encodeTopK(x.data_ptr<float>(), res, count, k, 1.0f, mine, scratch.data_ptr(), s);
  const at::Tensor pairsWire = wire.twin(pairs);
  wire.out(pairs.narrow(0, len(2 * k * r), len(2 * k)),
           pairsWire.narrow(0, len(2 * k * r), len(2 * k)));
  std::vector<void*> blocks(P);
  for (int p = 0; p < P; ++p)
    blocks[p] = static_cast<uint8_t*>(pairsWire.data_ptr()) + p * block;
  allgatherRing(rail, blocks, block);
  wire.in(pairsWire, pairs);
  const float scale = op == ReduceOp::kAvg ? 1.0f / static_cast<float>(P) : 1.0f;
  cxc::decodeTopK(pairs.data_ptr<int32_t>(), P, k, count, scale, x.data_ptr<float>(),
                  /*accumulate=*/false, s);
  ctr.wireBytes.fetch_add(static_cast<uint64_t>(P - 1) * block, std::memory_order_relaxed);
}

}  // namespace distx
