// ProcessGroupDistx collectives on CPU tensors: check arguments on the
// caller's thread (typed Python errors), then queue a job that runs the
// algorithm on contiguous buffers and writes results in place.
#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include "algorithms/select.h"
#include "backend/allgather_packed.hpp"
#include "backend/contig.hpp"
#include "backend/op_checks.hpp"
#include "backend/process_group_distx.hpp"

namespace distx {
namespace {

const Topology& groupTopology(const CollectiveContext& ctx) {
  static const Topology kNone;
  TORCH_INTERNAL_ASSERT(ctx.topology && ctx.topology->size() == ctx.size(),
                        "distx: a collective ran without the group's topology");
  return ctx.topology ? *ctx.topology : kNone;
}

void runAllreduce(CollectiveContext& ctx, at::Tensor& buf, const ReduceSpec& spec) {
  if (spec.preMul) buf.mul_(spec.factor);
  const DType dt = toDType(buf.scalar_type(), "all_reduce");
  const size_t bytes = static_cast<size_t>(buf.numel()) * dtypeSize(dt);
  const auto choice = selectAllreduce(bytes, groupTopology(ctx), ctx.forcedAlgorithm);
  choice.run(ctx, buf.data_ptr(), static_cast<size_t>(buf.numel()), dt, spec.op);
}

}  // namespace

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::allreduce(std::vector<at::Tensor>& tensors,
                                                            const c10d::AllreduceOptions& opts) {
  if (onCuda("all_reduce", tensors)) return cuda().allreduce(tensors, opts);
  if (tensors.size() == 1 && tensors[0].defined() && tensors[0].is_sparse())
    return allreduceSparse(tensors[0], opts);  // Note [Sparse all-reduce]
  const at::Tensor& t = singleTensor(tensors, "all_reduce");
  const ReduceSpec spec = toReduceOp(opts.reduceOp, t.scalar_type(), "all_reduce");
  // Note [Compression switch]
  const bool compress = compressor_->compresses(
      t.scalar_type(), t.device(), static_cast<int64_t>(t.nbytes()), spec.op, spec.preMul);
  const BucketKey key{reinterpret_cast<uintptr_t>(t.data_ptr()), t.numel()};
  Compressor* compressor = compressor_.get();
  return enqueue(c10d::OpType::ALLREDUCE, "all_reduce", opts.timeout, {t},
                 [t, spec, compress, key, compressor](CollectiveContext& ctx) {
                   Contig c(t);
                   if (compress) {
                     compressor->run(ctx, c.buf, spec.op, key);
                   } else {
                     runAllreduce(ctx, c.buf, spec);
                   }
                   c.writeBack();
                 });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::allreduce_coalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  if (onCuda("all_reduce_coalesced", tensors)) return cuda().allreduce_coalesced(tensors, opts);
  checkOneDtype(tensors, "all_reduce_coalesced");
  const ReduceSpec spec =
      toReduceOp(opts.reduceOp, tensors[0].scalar_type(), "all_reduce_coalesced");
  std::vector<at::Tensor> ts = tensors;
  int64_t bytes = 0, numel = 0;
  for (const auto& t : ts) {
    bytes += static_cast<int64_t>(t.nbytes());
    numel += t.numel();
  }
  // Note [Compression switch]: the whole coalesced buffer is one bucket.
  const bool compress =
      compressor_->compresses(ts[0].scalar_type(), ts[0].device(), bytes, spec.op, spec.preMul);
  const BucketKey key{reinterpret_cast<uintptr_t>(ts[0].data_ptr()), numel};
  Compressor* compressor = compressor_.get();
  return enqueue(c10d::OpType::ALLREDUCE_COALESCED, "all_reduce_coalesced", opts.timeout, ts,
                 [ts, spec, compress, key, compressor](CollectiveContext& ctx) {
                   at::Tensor buf = concatFlat(ts);
                   if (compress) {
                     compressor->run(ctx, buf, spec.op, key);
                   } else {
                     runAllreduce(ctx, buf, spec);
                   }
                   splitInto(buf, ts);
                 });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::broadcast(std::vector<at::Tensor>& tensors,
                                                            const c10d::BroadcastOptions& opts) {
  if (onCuda("broadcast", tensors)) return cuda().broadcast(tensors, opts);
  const at::Tensor& t = singleTensor(tensors, "broadcast");
  const int root = checkRoot(opts.rootRank, opts.rootTensor, size_, "broadcast");
  return enqueue(c10d::OpType::BROADCAST, "broadcast", opts.timeout, {t},
                 [t, root](CollectiveContext& ctx) {
                   Contig c(t);
                   const size_t bytes = c.buf.nbytes();
                   selectBroadcast(bytes, groupTopology(ctx), ctx.forcedAlgorithm)
                       .fn(ctx, c.buf.data_ptr(), bytes, root);
                   c.writeBack();
                 });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::allgather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  if (onCuda("all_gather", outputs, inputs)) return cuda().allgather(outputs, inputs, opts);
  const at::Tensor& in = singleTensor(inputs, "all_gather");
  const auto outs = groupList(outputs, in, size_, "all_gather", "output");
  const int r = rank_;
  return enqueue(
      c10d::OpType::ALLGATHER, "all_gather", opts.timeout, outs,
      [in, outs, r](CollectiveContext& ctx) {
        // Outputs that alias each other (one tensor listed twice) would make the
        // ring forward blocks already overwritten; gather privately then.
        bool aliased = false;
        for (size_t i = 0; i < outs.size() && !aliased; ++i) {
          for (size_t j = i + 1; j < outs.size() && !aliased; ++j) {
            aliased = at::get_overlap_status(outs[i], outs[j]) != at::MemOverlapStatus::No;
          }
        }
        if (aliased) {
          const int64_t n = in.numel();
          at::Tensor buf = parked(at::empty({n * static_cast<int64_t>(outs.size())}, in.options()));
          buf.narrow(0, r * n, n).copy_(in.reshape({-1}));
          std::vector<void*> blocks;
          for (size_t i = 0; i < outs.size(); ++i)
            blocks.push_back(buf.narrow(0, i * n, n).data_ptr());
          allgatherRing(ctx, blocks, in.nbytes());
          for (size_t i = 0; i < outs.size(); ++i)
            outs[i].copy_(buf.narrow(0, i * n, n).view(outs[i].sizes()));
          return;
        }
        ContigList cs(outs);
        cs.items[r].buf.view({-1}).copy_(in.reshape({-1}));
        allgatherRing(ctx, cs.blocks, in.nbytes());
        cs.writeBack();
      },
      {in});
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::_allgather_base(
    at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& opts) {
  if (onCuda("all_gather_into_tensor", output, input))
    return cuda()._allgather_base(output, input, opts);
  checkAllgatherPair(output, input, size_, "all_gather_into_tensor");
  const at::Tensor in = input, out = output;
  const int r = rank_, P = size_;
  return enqueue(c10d::OpType::_ALLGATHER_BASE, "all_gather_into_tensor", opts.timeout, {out},
                 [in, out, r, P](CollectiveContext& ctx) {
                   Contig c(out);
                   at::Tensor flat = c.buf.view({-1});
                   at::Tensor mine = flat.narrow(0, r * in.numel(), in.numel());
                   if (mine.data_ptr() != in.data_ptr()) mine.copy_(in.reshape({-1}));
                   const size_t block = in.nbytes();
                   std::vector<void*> blocks;
                   for (int i = 0; i < P; ++i)
                     blocks.push_back(static_cast<uint8_t*>(c.buf.data_ptr()) + i * block);
                   allgatherRingNodeOrdered(ctx, blocks, block);
                   c.writeBack();
                 },
                 {in});
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& outputLists, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  if (onCuda("all_gather_coalesced", outputLists, inputs))
    return cuda().allgather_coalesced(outputLists, inputs, opts);
  const char* op = "all_gather_coalesced";
  // outputLists[rank][i] receives input i of that rank.
  const std::vector<at::Tensor> flatOuts =
      allgatherCoalescedOutputs(outputLists, inputs, size_, op);
  const std::vector<at::Tensor> ins = inputs;
  const auto outs = outputLists;
  // One ring all-gather over the byte-concatenation of every input.
  return enqueue(
      c10d::OpType::ALLGATHER_COALESCED, op, opts.timeout, flatOuts,
      [ins, outs](CollectiveContext& ctx) {
        const PackedBlocks packed = allgatherPacked(ctx, ins);
        for (int src = 0; src < ctx.size(); ++src) {
          int64_t pos = 0;
          for (size_t i = 0; i < ins.size(); ++i) {
            const int64_t n = ins[i].nbytes();
            copyBytesInto(outs[src][i], packed.bytes(src, pos, n));
            pos += n;
          }
        }
      },
      ins);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::barrier(const c10d::BarrierOptions& opts) {
  return enqueue(c10d::OpType::BARRIER, "barrier", opts.timeout, {},
                 [](CollectiveContext& ctx) { barrierDissemination(ctx); });
}

}  // namespace distx
