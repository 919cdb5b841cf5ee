// Reduce-scatter (list form, reduce_scatter_tensor, the coalesced form) and
// the coalesced all_gather_into_tensor: the shapes FSDP2 issues.
//
// Every form packs its inputs into one contiguous buffer of P blocks (block r
// = what rank r ends up with) and runs one ring over it, so a coalesced call
// costs one collective's latency, not one per tensor. The packed buffer is a
// copy: the ring leaves partial sums in the blocks a rank does not own.
#include <c10/util/Exception.h>

#include <map>

#include "backend/allgather_packed.hpp"
#include "backend/contig.hpp"
#include "backend/op_checks.hpp"
#include "backend/process_group_distx.hpp"

namespace distx {
namespace {

// Reduce-scatters `packed` (P blocks of `block` elements; overwritten) with
// `spec`; this rank's block is returned as a view into `packed`.
at::Tensor reduceScatterPacked(CollectiveContext& ctx, at::Tensor packed, int64_t block,
                               const ReduceSpec& spec, const char* op) {
  if (spec.preMul) packed.mul_(spec.factor);
  reduceScatterRingNodeOrdered(ctx, packed.data_ptr(), static_cast<size_t>(block),
                               toDType(packed.scalar_type(), op), spec.op);
  return packed.narrow(0, ctx.rank() * block, block);
}

}  // namespace

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::_reduce_scatter_base(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  if (onCuda("reduce_scatter_tensor", output, input))
    return cuda()._reduce_scatter_base(output, input, opts);
  const char* op = "reduce_scatter_tensor";
  checkReduceScatterPair(output, input, size_, op);
  const ReduceSpec spec = toReduceOp(opts.reduceOp, input.scalar_type(), op);
  const at::Tensor in = input, out = output;
  return enqueue(c10d::OpType::_REDUCE_SCATTER_BASE, op, opts.timeout, {out},
                 [in, out, spec, op](CollectiveContext& ctx) {
                   at::Tensor packed = contiguousCopy(in).view({-1});
                   at::Tensor mine = reduceScatterPacked(ctx, packed, out.numel(), spec, op);
                   out.copy_(mine.view(out.sizes()));
                 });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::reduce_scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  if (onCuda("reduce_scatter", outputs, inputs))
    return cuda().reduce_scatter(outputs, inputs, opts);
  const char* op = "reduce_scatter";
  const at::Tensor& out = singleTensor(outputs, op);
  const auto ins = groupList(inputs, out, size_, op, "input");
  const ReduceSpec spec = toReduceOp(opts.reduceOp, out.scalar_type(), op);
  return enqueue(
      c10d::OpType::REDUCE_SCATTER, op, opts.timeout, {out},
      [ins, out, spec, op](CollectiveContext& ctx) {
        at::Tensor mine = reduceScatterPacked(ctx, concatFlat(ins), out.numel(), spec, op);
        out.copy_(mine.view(out.sizes()));
      },
      ins);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  if (onCuda("reduce_scatter_tensor_coalesced", outputs, inputs))
    return cuda().reduce_scatter_tensor_coalesced(outputs, inputs, opts);
  const char* op = "reduce_scatter_tensor_coalesced";
  const std::vector<ReduceSpec> specs =
      checkReduceScatterPairs(outputs, inputs, size_, opts.reduceOp, toReduceOp, op);
  const std::vector<at::Tensor> ins = inputs, outs = outputs;
  const int P = size_;
  return enqueue(
      c10d::OpType::REDUCE_SCATTER_TENSOR_COALESCED, op, opts.timeout, outs,
      [ins, outs, specs, P, op](CollectiveContext& ctx) {
        // One ring per dtype (in order of first appearance); tensors of one
        // dtype are interleaved block by block: block r = every input's r-th slice.
        std::map<at::ScalarType, std::vector<size_t>> byType;
        std::vector<at::ScalarType> order;
        for (size_t i = 0; i < ins.size(); ++i) {
          auto& v = byType[ins[i].scalar_type()];
          if (v.empty()) order.push_back(ins[i].scalar_type());
          v.push_back(i);
        }
        for (at::ScalarType st : order) {
          const auto& idx = byType[st];
          int64_t block = 0;
          for (size_t i : idx)
            block += outs[i].numel();
          at::Tensor packed = parked(at::empty(
              {block * P}, ins[idx[0]].options().memory_format(at::MemoryFormat::Contiguous)));
          int64_t pos = 0;  // input i's offset inside a block
          for (size_t i : idx) {
            const int64_t n = outs[i].numel();
            const at::Tensor flat = ins[i].reshape({-1});
            for (int r = 0; r < P; ++r) {
              packed.narrow(0, r * block + pos, n).copy_(flat.narrow(0, r * n, n));
            }
            pos += n;
          }
          at::Tensor mine = reduceScatterPacked(ctx, packed, block, specs[idx[0]], op);
          int64_t off = 0;
          for (size_t i : idx) {
            const int64_t n = outs[i].numel();
            outs[i].copy_(mine.narrow(0, off, n).view(outs[i].sizes()));
            off += n;
          }
        }
      },
      ins);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  if (onCuda("all_gather_into_tensor_coalesced", outputs, inputs))
    return cuda().allgather_into_tensor_coalesced(outputs, inputs, opts);
  const char* op = "all_gather_into_tensor_coalesced";
  checkAllgatherPairs(outputs, inputs, size_, op);
  const std::vector<at::Tensor> ins = inputs, outs = outputs;
  // One ring all-gather over the byte-concatenation of every input.
  return enqueue(
      c10d::OpType::COALESCED, op, opts.timeout, outs,
      [ins, outs](CollectiveContext& ctx) {
        const PackedBlocks packed = allgatherPacked(ctx, ins);
        int64_t pos = 0;  // input i's offset inside a block
        for (size_t i = 0; i < ins.size(); ++i) {
          const int64_t nb = ins[i].nbytes();
          if (nb > 0) {
            Contig c(outs[i]);
            at::Tensor dst = c.buf.view({-1}).view(at::kByte);
            for (int src = 0; src < ctx.size(); ++src)
              dst.narrow(0, src * nb, nb).copy_(packed.bytes(src, pos, nb));
            c.writeBack();
          }
          pos += nb;
        }
      },
      ins);
}

}  // namespace distx
