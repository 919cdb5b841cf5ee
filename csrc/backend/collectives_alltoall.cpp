// all_to_all (list of P tensors each way, sizes may differ per peer) and
// all_to_all_single (one tensor each way, optional split sizes along dim 0),
// both on the pairwise-exchange algorithm.
#include <c10/util/Exception.h>

#include "backend/contig.hpp"
#include "backend/process_group_distx.hpp"
#include "backend/tensor_checks.hpp"

namespace distx {

std::vector<size_t> blockBytes(const at::Tensor& t, const std::vector<int64_t>& splits, int P,
                               const char* op, const char* which) {
  TORCH_CHECK_VALUE(t.dim() >= 1, "distx ", op, ": the ", which,
                    " tensor needs at least one dimension to split, got a 0-d tensor");
  const int64_t rows = t.size(0);
  const int64_t rowBytes = rows ? static_cast<int64_t>(t.nbytes()) / rows
                                : t.numel() * static_cast<int64_t>(t.element_size());
  std::vector<size_t> out(P);
  if (splits.empty()) {
    TORCH_CHECK_VALUE(rows % P == 0, "distx ", op, ": the ", which, " tensor's dim 0 (", rows,
                      ") does not divide equally across the group size ", P, "; pass split sizes");
    for (auto& b : out)
      b = static_cast<size_t>(rows / P * rowBytes);
    return out;
  }
  TORCH_CHECK_VALUE(static_cast<int>(splits.size()) == P, "distx ", op, ": ", splits.size(), " ",
                    which, " split sizes for a group of ", P, " ranks");
  int64_t sum = 0;
  for (int p = 0; p < P; ++p) {
    TORCH_CHECK_VALUE(splits[p] >= 0, "distx ", op, ": ", which, " split size ", p,
                      " is negative (", splits[p], ")");
    sum += splits[p];
    out[p] = static_cast<size_t>(splits[p] * rowBytes);
  }
  TORCH_CHECK_VALUE(sum == rows, "distx ", op, ": the ", which, " split sizes add up to ", sum,
                    " but the tensor's dim 0 is ", rows);
  return out;
}

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
  checkTensor(input, op);
  checkTensor(output, op);
  TORCH_CHECK_TYPE(output.scalar_type() == input.scalar_type(), "distx ", op, ": output dtype ",
                   output.scalar_type(), " differs from input dtype ", input.scalar_type());
  const std::vector<size_t> sendBytes = blockBytes(input, inputSplitSizes, size_, op, "input");
  const std::vector<size_t> recvBytes = blockBytes(output, outputSplitSizes, size_, op, "output");
  TORCH_CHECK_VALUE(sendBytes[rank_] == recvBytes[rank_], "distx ", op, ": rank ", rank_, " sends ",
                    sendBytes[rank_], " bytes to itself but its output split expects ",
                    recvBytes[rank_]);
  const at::Tensor in = input, out = output;
  return enqueue(c10d::OpType::ALLTOALL_BASE, op, opts.timeout, {out},
                 [in, out, sendBytes, recvBytes](CollectiveContext& ctx) {
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
  TORCH_CHECK_VALUE(
      static_cast<int>(inputs.size()) == size_ && static_cast<int>(outputs.size()) == size_,
      "distx ", op, ": expected ", size_, " input and ", size_,
      " output tensors (the group size), got ", inputs.size(), " and ", outputs.size());
  for (int p = 0; p < size_; ++p) {
    checkTensor(inputs[p], op);
    checkTensor(outputs[p], op);
    TORCH_CHECK_TYPE(inputs[p].scalar_type() == inputs[0].scalar_type() &&
                         outputs[p].scalar_type() == inputs[0].scalar_type(),
                     "distx ", op, ": every tensor must have dtype ", inputs[0].scalar_type(),
                     ", got input ", inputs[p].scalar_type(), " and output ",
                     outputs[p].scalar_type(), " for rank ", p);
  }
  TORCH_CHECK_VALUE(inputs[rank_].numel() == outputs[rank_].numel(), "distx ", op, ": rank ", rank_,
                    " sends ", inputs[rank_].numel(),
                    " elements to itself but its output for itself holds ", outputs[rank_].numel());
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
