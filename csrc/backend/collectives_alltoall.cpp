// all_to_all (list of P tensors each way, sizes may differ per peer) and
// all_to_all_single (one tensor each way, optional split sizes along dim 0),
// both on the pairwise-exchange algorithm.
#include <c10/util/Exception.h>

#include "backend/contig.hpp"
#include "backend/op_checks.hpp"
#include "backend/process_group_distx.hpp"

namespace distx {
namespace {

std::vector<size_t> offsetsOf(const std::vector<size_t>& sizes) {
  std::vector<size_t> off(sizes.size());
  size_t at = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    off[i] = at;
    at += sizes[i];
  }
  return off;
}

}  // namespace

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::alltoall_base(
    at::Tensor& output, at::Tensor& input, std::vector<int64_t>& outputSplitSizes,
    std::vector<int64_t>& inputSplitSizes, const c10d::AllToAllOptions& opts) {
  if (onCuda("all_to_all_single", output, input))
    return cuda().alltoall_base(output, input, outputSplitSizes, inputSplitSizes, opts);
  const char* op = "all_to_all_single";
  const AlltoallBytes bytes =
      alltoallSingleBytes(output, input, outputSplitSizes, inputSplitSizes, rank_, size_, op);
  const at::Tensor in = input, out = output;
  return enqueue(c10d::OpType::ALLTOALL_BASE, op, opts.timeout, {out},
                 [in, out, sendBytes = bytes.send, recvBytes = bytes.recv](CollectiveContext& ctx) {
                   // In place (out shares memory with in): send from a copy.
                   const at::Tensor src =
                       in.is_alias_of(out) ? contiguousCopy(in) : parked(in.contiguous());
                   Contig c(out);
                   auto* s = static_cast<const uint8_t*>(src.data_ptr());
                   auto* d = static_cast<uint8_t*>(c.buf.data_ptr());
                   const auto so = offsetsOf(sendBytes), ro = offsetsOf(recvBytes);
                   std::vector<const void*> sp;
                   std::vector<void*> rp;
                   for (size_t p = 0; p < sendBytes.size(); ++p) {
                     sp.push_back(s + so[p]);
                     rp.push_back(d + ro[p]);
                   }
                   alltoallPairwise(ctx, sp, sendBytes, rp, recvBytes);
                   c.writeBack();
                 },
                 {in});
}

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::alltoall(std::vector<at::Tensor>& outputs,
                                                           std::vector<at::Tensor>& inputs,
                                                           const c10d::AllToAllOptions& opts) {
  if (onCuda("all_to_all", outputs, inputs)) return cuda().alltoall(outputs, inputs, opts);
  const char* op = "all_to_all";
  checkAlltoall(outputs, inputs, rank_, size_, op);
  const std::vector<at::Tensor> ins = inputs, outs = outputs;
  return enqueue(
      c10d::OpType::ALLTOALL, op, opts.timeout, outs,
      [ins, outs](CollectiveContext& ctx) {
        bool aliased = false;
        for (const auto& o : outs) {
          for (const auto& i : ins)
            aliased = aliased || o.is_alias_of(i);
        }
        std::vector<at::Tensor> srcs;
        std::vector<Contig> dsts;
        std::vector<const void*> sp;
        std::vector<void*> rp;
        std::vector<size_t> sb, rb;
        for (const auto& t : ins)
          srcs.push_back(aliased ? contiguousCopy(t) : parked(t.contiguous()));
        for (const auto& t : outs)
          dsts.emplace_back(t);
        for (size_t p = 0; p < ins.size(); ++p) {
          sp.push_back(srcs[p].data_ptr());
          sb.push_back(srcs[p].nbytes());
          rp.push_back(dsts[p].buf.data_ptr());
          rb.push_back(dsts[p].buf.nbytes());
        }
        alltoallPairwise(ctx, sp, sb, rp, rb);
        for (auto& c : dsts)
          c.writeBack();
      },
      ins);
}

}  // namespace distx
