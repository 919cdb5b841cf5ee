// Note [One check layer] (op_checks.hpp): the argument checks both devices call.
#include "backend/op_checks.hpp"

#include <c10/util/Exception.h>

namespace distx {
namespace {

// The dtype half of a pair check (the per-tensor checks first).
void checkPairDtype(const at::Tensor& out, const at::Tensor& in, const char* op) {
  checkTensor(in, op);
  checkTensor(out, op);
  TORCH_CHECK_TYPE(out.scalar_type() == in.scalar_type(), "distx ", op, ": output dtype ",
                   out.scalar_type(), " differs from input dtype ", in.scalar_type());
}

void checkSameCount(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& ins,
                    const char* op) {
  TORCH_CHECK_VALUE(outs.size() == ins.size(), "distx ", op, ": got ", outs.size(), " outputs for ",
                    ins.size(), " inputs");
}

// What a list-of-lists argument holds, for messages: the one list's length,
// else the number of lists.
size_t listCount(const std::vector<std::vector<at::Tensor>>& lists) {
  return lists.size() == 1 ? lists[0].size() : lists.size();
}

// Byte length of each of the P blocks of `t` split along dim 0 by `splits`
// (empty: equal split).
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

}  // namespace

void checkUsable(const char* op, bool stopping, const std::string& broken) {
  const char* sep = op ? " " : "";
  op = op ? op : "";
  TORCH_CHECK_WITH(DistBackendError, broken.empty(), "distx", sep, op,
                   ": the process group can no longer run CUDA collectives: ", broken);
  TORCH_CHECK(!stopping, "distx", sep, op, ": the process group was shut down or aborted");
}

int checkRoot(int64_t root, int size, const char* op) {
  TORCH_CHECK_VALUE(root >= 0 && root < size, "distx ", op, ": root rank ", root, " is outside 0..",
                    size - 1);
  return static_cast<int>(root);
}

int checkRoot(int64_t root, int64_t rootTensor, int size, const char* op) {
  const int r = checkRoot(root, size, op);
  TORCH_CHECK_VALUE(rootTensor == 0, "distx ", op, ": rootTensor must be 0, got ", rootTensor);
  return r;
}

int checkPeer(int peer, int rank, int size, const char* op, const char* which, bool allowSelf) {
  TORCH_CHECK_VALUE(peer >= 0 && peer < size, "distx ", op, ": ", which, " rank ", peer,
                    " is outside 0..", size - 1);
  TORCH_CHECK_VALUE(allowSelf || peer != rank, "distx ", op, ": ", which, " rank ", peer,
                    " is this rank; ", op, " of CUDA tensors needs another rank");
  return peer;
}

void checkOneDtype(const std::vector<at::Tensor>& ts, const char* op) {
  TORCH_CHECK_VALUE(!ts.empty(), "distx ", op, ": got no tensors");
  checkTensor(ts[0], op);
  for (const auto& t : ts) {
    checkTensor(t, op);
    TORCH_CHECK_TYPE(t.scalar_type() == ts[0].scalar_type(), "distx ", op,
                     ": all tensors must have one dtype, got ", t.scalar_type(), " and ",
                     ts[0].scalar_type());
  }
}

const std::vector<at::Tensor>& groupList(const std::vector<std::vector<at::Tensor>>& lists,
                                         const at::Tensor& ref, int size, const char* op,
                                         const char* which) {
  TORCH_CHECK_VALUE(lists.size() == 1, "distx ", op, ": expected one ", which, " list, got ",
                    lists.size());
  TORCH_CHECK_VALUE(static_cast<int>(lists[0].size()) == size, "distx ", op, ": the ", which,
                    " list has ", lists[0].size(), " tensors but the group has ", size, " ranks");
  checkSameTypeAndSize(lists[0], ref, op);
  return lists[0];
}

std::vector<at::Tensor> rootList(const std::vector<std::vector<at::Tensor>>& lists,
                                 const at::Tensor& ref, int root, int rank, int size,
                                 const char* op, const char* which) {
  if (rank != root) {
    TORCH_CHECK_VALUE(lists.empty() || (lists.size() == 1 && lists[0].empty()), "distx ", op,
                      ": only the root (rank ", root, ") passes an ", which, " list; rank ", rank,
                      " got ", listCount(lists), " ", which, "s");
    return {};
  }
  TORCH_CHECK_VALUE(lists.size() == 1 && static_cast<int>(lists[0].size()) == size, "distx ", op,
                    ": the root needs one ", which, " list of ", size,
                    " tensors (the group size), got ", listCount(lists),
                    lists.size() == 1 ? " tensors" : " lists");
  checkSameTypeAndSize(lists[0], ref, op);
  return lists[0];
}

std::vector<at::Tensor> allgatherCoalescedOutputs(
    const std::vector<std::vector<at::Tensor>>& outputLists, const std::vector<at::Tensor>& inputs,
    int size, const char* op) {
  TORCH_CHECK_VALUE(static_cast<int>(outputLists.size()) == size, "distx ", op, ": got ",
                    outputLists.size(), " output lists but the group has ", size, " ranks");
  for (const auto& t : inputs)
    checkTensor(t, op);
  std::vector<at::Tensor> flat;
  for (int src = 0; src < size; ++src) {
    TORCH_CHECK_VALUE(outputLists[src].size() == inputs.size(), "distx ", op, ": output list ", src,
                      " has ", outputLists[src].size(), " tensors but there are ", inputs.size(),
                      " inputs");
    for (size_t i = 0; i < inputs.size(); ++i) {
      checkSameTypeAndSize({outputLists[src][i]}, inputs[i], op);
      flat.push_back(outputLists[src][i]);
    }
  }
  return flat;
}

void checkAllgatherPair(const at::Tensor& out, const at::Tensor& in, int size, const char* op) {
  checkPairDtype(out, in, op);
  TORCH_CHECK_VALUE(out.numel() == in.numel() * size, "distx ", op, ": output has ", out.numel(),
                    " elements, expected world size x input = ", in.numel() * size);
}

void checkReduceScatterPair(const at::Tensor& out, const at::Tensor& in, int size, const char* op) {
  checkPairDtype(out, in, op);
  TORCH_CHECK_VALUE(in.numel() == out.numel() * size, "distx ", op, ": input has ", in.numel(),
                    " elements, expected world size x output = ", out.numel() * size);
}

void checkAllgatherPairs(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& ins,
                         int size, const char* op) {
  checkSameCount(outs, ins, op);
  for (size_t i = 0; i < ins.size(); ++i) {
    checkTensor(ins[i], op);
    checkTensor(outs[i], op);
    TORCH_CHECK_TYPE(outs[i].scalar_type() == ins[i].scalar_type(), "distx ", op, ": output ", i,
                     " has dtype ", outs[i].scalar_type(), " but input ", i, " has ",
                     ins[i].scalar_type());
    TORCH_CHECK_VALUE(outs[i].numel() == ins[i].numel() * size, "distx ", op, ": output ", i,
                      " has ", outs[i].numel(),
                      " elements, expected world size x input = ", ins[i].numel() * size);
  }
}

std::vector<ReduceSpec> checkReduceScatterPairs(const std::vector<at::Tensor>& outs,
                                                const std::vector<at::Tensor>& ins, int size,
                                                const c10d::ReduceOp& reduceOp, ReduceSpecFn toSpec,
                                                const char* op) {
  checkSameCount(outs, ins, op);
  std::vector<ReduceSpec> specs;
  for (size_t i = 0; i < ins.size(); ++i) {
    checkReduceScatterPair(outs[i], ins[i], size, op);
    specs.push_back(toSpec(reduceOp, ins[i].scalar_type(), op));
  }
  return specs;
}

AlltoallBytes alltoallSingleBytes(const at::Tensor& out, const at::Tensor& in,
                                  const std::vector<int64_t>& outSplits,
                                  const std::vector<int64_t>& inSplits, int rank, int size,
                                  const char* op) {
  checkPairDtype(out, in, op);
  AlltoallBytes b{blockBytes(in, inSplits, size, op, "input"),
                  blockBytes(out, outSplits, size, op, "output")};
  TORCH_CHECK_VALUE(b.send[rank] == b.recv[rank], "distx ", op, ": rank ", rank, " sends ",
                    b.send[rank], " bytes to itself but its output split expects ", b.recv[rank]);
  return b;
}

void checkAlltoall(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& ins,
                   int rank, int size, const char* op) {
  TORCH_CHECK_VALUE(static_cast<int>(ins.size()) == size && static_cast<int>(outs.size()) == size,
                    "distx ", op, ": expected ", size, " input and ", size,
                    " output tensors (the group size), got ", ins.size(), " and ", outs.size());
  for (int p = 0; p < size; ++p) {
    checkTensor(ins[p], op);
    checkTensor(outs[p], op);
    TORCH_CHECK_TYPE(ins[p].scalar_type() == ins[0].scalar_type() &&
                         outs[p].scalar_type() == ins[0].scalar_type(),
                     "distx ", op, ": every tensor must have dtype ", ins[0].scalar_type(),
                     ", got input ", ins[p].scalar_type(), " and output ", outs[p].scalar_type(),
                     " for rank ", p);
  }
  TORCH_CHECK_VALUE(ins[rank].numel() == outs[rank].numel(), "distx ", op, ": rank ", rank,
                    " sends ", ins[rank].numel(),
                    " elements to itself but its output for itself holds ", outs[rank].numel());
}

}  // namespace distx
