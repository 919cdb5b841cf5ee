// Rooted collectives: reduce (binomial tree), gather and scatter (linear).
// Argument checks follow Gloo's rules (the root passes the P-tensor list, the
// other ranks an empty one) with ValueError/TypeError on the caller's thread.
#include <c10/util/Exception.h>

#include "backend/contig.hpp"
#include "backend/op_checks.hpp"
#include "backend/process_group_distx.hpp"

namespace distx {

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::reduce(std::vector<at::Tensor>& tensors,
                                                         const c10d::ReduceOptions& opts) {
  if (onCuda("reduce", tensors)) return cuda().reduce(tensors, opts);
  const char* op = "reduce";
  const at::Tensor& t = singleTensor(tensors, op);
  const int root = checkRoot(opts.rootRank, opts.rootTensor, size_, op);
  const ReduceSpec spec = toReduceOp(opts.reduceOp, t.scalar_type(), op);
  const bool isRoot = rank_ == root;
  return enqueue(c10d::OpType::REDUCE, op, opts.timeout, {t},
                 [t, spec, root, isRoot, op](CollectiveContext& ctx) {
                   // Only the root's tensor changes: the others reduce a copy
                   // (inner tree ranks keep partial results in it).
                   auto run = [&](at::Tensor buf) {
                     if (spec.preMul) buf.mul_(spec.factor);
                     reduceTree(ctx, buf.data_ptr(), static_cast<size_t>(buf.numel()),
                                toDType(buf.scalar_type(), op), spec.op, root);
                   };
                   if (isRoot) {
                     Contig c(t);
                     run(c.buf);
                     c.writeBack();
                   } else {
                     run(contiguousCopy(t));
                   }
                 });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::gather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts) {
  if (onCuda("gather", outputs, inputs)) return cuda().gather(outputs, inputs, opts);
  const char* op = "gather";
  const at::Tensor& in = singleTensor(inputs, op);
  const int root = checkRoot(opts.rootRank, size_, op);
  const std::vector<at::Tensor> outs = rootList(outputs, in, root, rank_, size_, op, "output");
  return enqueue(c10d::OpType::GATHER, op, opts.timeout, outs,
                 [in, outs, root](CollectiveContext& ctx) {
                   const at::Tensor src = parked(in.contiguous());
                   ContigList cs(outs);
                   gatherLinear(ctx, src.data_ptr(), src.nbytes(), cs.blocks, root);
                   cs.writeBack();
                 },
                 {in});
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts) {
  if (onCuda("scatter", outputs, inputs)) return cuda().scatter(outputs, inputs, opts);
  const char* op = "scatter";
  const at::Tensor& out = singleTensor(outputs, op);
  const int root = checkRoot(opts.rootRank, size_, op);
  const std::vector<at::Tensor> ins = rootList(inputs, out, root, rank_, size_, op, "input");
  return enqueue(
      c10d::OpType::SCATTER, op, opts.timeout, {out},
      [ins, out, root](CollectiveContext& ctx) {
        std::vector<at::Tensor> srcs;
        std::vector<const void*> blocks;
        for (const auto& t : ins)
          srcs.push_back(parked(t.contiguous()));
        for (const auto& t : srcs)
          blocks.push_back(t.data_ptr());
        Contig c(out);
        scatterLinear(ctx, blocks, c.buf.data_ptr(), c.buf.nbytes(), root);
        c.writeBack();
      },
      ins);
}

}  // namespace distx
