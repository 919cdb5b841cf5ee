// CudaBackend collectives over NCCL: argument checks on the caller's thread
// (the same typed errors as the CPU path), then one launch() whose body
// enqueues NCCL calls on the internal stream (Note [CUDA path]). Non-contiguous
// tensors and list forms are staged through contiguous buffers allocated on
// the internal stream.
#include <c10/util/Exception.h>

#include "backend/contig.hpp"
#include "backend/cuda/cuda_backend.hpp"

namespace distx {
namespace {

size_t count(const at::Tensor& t) {
  return static_cast<size_t>(t.numel());
}

DType dtypeOf(const at::Tensor& t) {
  return toDType(t.scalar_type(), "cuda");
}

}  // namespace

ReduceSpec ncclReduceSpec(const c10d::ReduceOp& op, at::ScalarType dtype, const char* opName) {
  const ReduceSpec spec = toReduceOp(op, dtype, opName);
  const DType dt = toDType(dtype, opName);
  TORCH_CHECK_TYPE(nccl::reduceSupported(dt, spec.op), "distx ", opName, ": ReduceOp.",
                   reduceOpName(spec.op), " on ", dtype,
                   " CUDA tensors is not supported by NCCL (move the tensor to the CPU)");
  return spec;
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allreduce(std::vector<at::Tensor>& tensors,
                                                      const c10d::AllreduceOptions& opts) {
  if (multiHost() && deps_.uniform) return allreduceMultiHost(tensors, opts);
  if (multiHost())
    return staged(c10d::OpType::ALLREDUCE, "all_reduce", {}, tensors, [&](const HostMirror& h) {
      auto v = mirrorAll(h, tensors);
      return deps_.host->allreduce(v, opts);
    });
  const char* op = "all_reduce";
  const at::Tensor& t = singleTensor(tensors, op);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, t.scalar_type(), op);
  return launch(c10d::OpType::ALLREDUCE, op, opts.timeout, {}, {t},
                [t, spec](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  Contig c(t);
                  if (spec.preMul) c.buf.mul_(spec.factor);
                  comm.allReduce(c.buf.data_ptr(), c.buf.data_ptr(), count(c.buf), dtypeOf(c.buf),
                                 spec.op, s, dl);
                  c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allreduce_coalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::ALLREDUCE_COALESCED, "all_reduce_coalesced", {}, tensors,
                  [&](const HostMirror& h) {
                    auto v = mirrorAll(h, tensors);
                    return deps_.host->allreduce_coalesced(v, opts);
                  });
  const char* op = "all_reduce_coalesced";
  TORCH_CHECK_VALUE(!tensors.empty(), "distx ", op, ": got no tensors");
  for (const auto& t : tensors) {
    checkTensor(t, op);
    TORCH_CHECK_TYPE(t.scalar_type() == tensors[0].scalar_type(), "distx ", op,
                     ": all tensors must have one dtype, got ", t.scalar_type(), " and ",
                     tensors[0].scalar_type());
  }
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, tensors[0].scalar_type(), op);
  const std::vector<at::Tensor> ts = tensors;
  return launch(c10d::OpType::ALLREDUCE_COALESCED, op, opts.timeout, {}, ts,
                [ts, spec](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  std::vector<at::Tensor> flat;
                  for (const auto& t : ts)
                    flat.push_back(t.reshape({-1}));
                  at::Tensor buf = at::cat(flat);
                  if (spec.preMul) buf.mul_(spec.factor);
                  comm.allReduce(buf.data_ptr(), buf.data_ptr(), count(buf), dtypeOf(buf), spec.op,
                                 s, dl);
                  int64_t off = 0;
                  for (const auto& t : ts) {
                    t.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
                    off += t.numel();
                  }
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::broadcast(std::vector<at::Tensor>& tensors,
                                                      const c10d::BroadcastOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::BROADCAST, "broadcast", {}, tensors, [&](const HostMirror& h) {
      auto v = mirrorAll(h, tensors);
      return deps_.host->broadcast(v, opts);
    });
  const char* op = "broadcast";
  const at::Tensor& t = singleTensor(tensors, op);
  TORCH_CHECK_VALUE(opts.rootRank >= 0 && opts.rootRank < size_, "distx ", op, ": root rank ",
                    opts.rootRank, " is outside 0..", size_ - 1);
  TORCH_CHECK_VALUE(opts.rootTensor == 0, "distx ", op, ": rootTensor must be 0");
  const int root = static_cast<int>(opts.rootRank);
  return launch(c10d::OpType::BROADCAST, op, opts.timeout, {}, {t},
                [t, root](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  Contig c(t);
                  comm.broadcast(c.buf.data_ptr(), c.buf.data_ptr(), count(c.buf), dtypeOf(c.buf),
                                 root, s, dl);
                  c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::reduce(std::vector<at::Tensor>& tensors,
                                                   const c10d::ReduceOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::REDUCE, "reduce", {}, tensors, [&](const HostMirror& h) {
      auto v = mirrorAll(h, tensors);
      return deps_.host->reduce(v, opts);
    });
  const char* op = "reduce";
  const at::Tensor& t = singleTensor(tensors, op);
  TORCH_CHECK_VALUE(opts.rootRank >= 0 && opts.rootRank < size_, "distx ", op, ": root rank ",
                    opts.rootRank, " is outside 0..", size_ - 1);
  TORCH_CHECK_VALUE(opts.rootTensor == 0, "distx ", op, ": rootTensor must be 0");
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, t.scalar_type(), op);
  const int root = static_cast<int>(opts.rootRank);
  const bool isRoot = rank_ == root;
  return launch(c10d::OpType::REDUCE, op, opts.timeout, {}, {t},
                [t, spec, root, isRoot](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  // Only the root's tensor changes (a pre-multiplied copy elsewhere).
                  Contig c(isRoot || !spec.preMul ? t : contiguousCopy(t));
                  if (spec.preMul) c.buf.mul_(spec.factor);
                  comm.reduce(c.buf.data_ptr(), c.buf.data_ptr(), count(c.buf), dtypeOf(c.buf),
                              spec.op, root, s, dl);
                  if (isRoot) c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                                      std::vector<at::Tensor>& inputs,
                                                      const c10d::AllgatherOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::ALLGATHER, "all_gather", inputs, flatten(outputs),
                  [&](const HostMirror& h) {
                    auto o = mirrorAll(h, outputs);
                    auto i = mirrorAll(h, inputs);
                    return deps_.host->allgather(o, i, opts);
                  });
  const char* op = "all_gather";
  const at::Tensor& in = singleTensor(inputs, op);
  TORCH_CHECK_VALUE(outputs.size() == 1, "distx ", op, ": expected one output list, got ",
                    outputs.size());
  const auto outs = outputs[0];
  TORCH_CHECK_VALUE(static_cast<int>(outs.size()) == size_, "distx ", op, ": the output list has ",
                    outs.size(), " tensors but the group has ", size_, " ranks");
  checkSameTypeAndSize(outs, in, op);
  return launch(c10d::OpType::ALLGATHER, op, opts.timeout, {in}, outs,
                [in, outs](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  const at::Tensor src = flatContiguous(in);
                  const int64_t n = src.numel();
                  at::Tensor buf =
                      at::empty({n * static_cast<int64_t>(outs.size())}, src.options());
                  comm.allGather(src.data_ptr(), buf.data_ptr(), count(src), dtypeOf(src), s, dl);
                  for (size_t i = 0; i < outs.size(); ++i)
                    outs[i].copy_(buf.narrow(0, i * n, n).view(outs[i].sizes()));
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::_allgather_base(at::Tensor& output, at::Tensor& input,
                                                            const c10d::AllgatherOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::_ALLGATHER_BASE, "all_gather_into_tensor", {input}, {output},
                  [&](const HostMirror& h) {
                    at::Tensor o = h(output), i = h(input);
                    return deps_.host->_allgather_base(o, i, opts);
                  });
  const char* op = "all_gather_into_tensor";
  checkTensor(input, op);
  checkTensor(output, op);
  TORCH_CHECK_TYPE(output.scalar_type() == input.scalar_type(), "distx ", op, ": output dtype ",
                   output.scalar_type(), " differs from input dtype ", input.scalar_type());
  TORCH_CHECK_VALUE(output.numel() == input.numel() * size_, "distx ", op, ": output has ",
                    output.numel(),
                    " elements, expected world size x input = ", input.numel() * size_);
  const at::Tensor in = input, out = output;
  return launch(c10d::OpType::_ALLGATHER_BASE, op, opts.timeout, {in}, {out},
                [in, out](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  const at::Tensor src = flatContiguous(in);
                  Contig c(out);
                  comm.allGather(src.data_ptr(), c.buf.data_ptr(), count(src), dtypeOf(src), s, dl);
                  c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& outputLists, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::ALLGATHER_COALESCED, "all_gather_coalesced", inputs,
                  flatten(outputLists), [&](const HostMirror& h) {
                    auto o = mirrorAll(h, outputLists);
                    auto i = mirrorAll(h, inputs);
                    return deps_.host->allgather_coalesced(o, i, opts);
                  });
  const char* op = "all_gather_coalesced";
  TORCH_CHECK_VALUE(static_cast<int>(outputLists.size()) == size_, "distx ", op, ": got ",
                    outputLists.size(), " output lists but the group has ", size_, " ranks");
  std::vector<at::Tensor> flatOuts;
  for (int src = 0; src < size_; ++src) {
    TORCH_CHECK_VALUE(outputLists[src].size() == inputs.size(), "distx ", op, ": output list ", src,
                      " has ", outputLists[src].size(), " tensors but there are ", inputs.size(),
                      " inputs");
    for (size_t i = 0; i < inputs.size(); ++i) {
      checkSameTypeAndSize({outputLists[src][i]}, inputs[i], op);
      flatOuts.push_back(outputLists[src][i]);
    }
  }
  const std::vector<at::Tensor> ins = inputs;
  const auto outs = outputLists;
  const int P = size_;
  // One all-gather over the byte-concatenation of every input.
  return launch(c10d::OpType::ALLGATHER_COALESCED, op, opts.timeout, ins, flatOuts,
                [ins, outs, P](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  std::vector<at::Tensor> bytes;
                  for (const auto& t : ins)
                    bytes.push_back(flatContiguous(t).view(at::kByte));
                  const at::Tensor packed = at::cat(bytes);
                  const int64_t block = packed.numel();
                  at::Tensor all = at::empty({block * P}, packed.options());
                  comm.allGather(packed.data_ptr(), all.data_ptr(), count(packed), DType::kUInt8, s,
                                 dl);
                  for (int src = 0; src < P; ++src) {
                    int64_t pos = src * block;
                    for (size_t i = 0; i < ins.size(); ++i) {
                      // Byte copies: an offset need not be aligned to the dtype.
                      Contig c(outs[src][i]);
                      const int64_t nb = static_cast<int64_t>(c.buf.nbytes());
                      c.buf.view({-1}).view(at::kByte).copy_(all.narrow(0, pos, nb));
                      c.writeBack();
                      pos += nb;
                    }
                  }
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::COALESCED, "all_gather_into_tensor_coalesced", inputs, outputs,
                  [&](const HostMirror& h) {
                    auto o = mirrorAll(h, outputs);
                    auto i = mirrorAll(h, inputs);
                    return deps_.host->allgather_into_tensor_coalesced(o, i, opts);
                  });
  const char* op = "all_gather_into_tensor_coalesced";
  TORCH_CHECK_VALUE(outputs.size() == inputs.size(), "distx ", op, ": got ", outputs.size(),
                    " outputs for ", inputs.size(), " inputs");
  for (size_t i = 0; i < inputs.size(); ++i) {
    checkTensor(inputs[i], op);
    checkTensor(outputs[i], op);
    TORCH_CHECK_TYPE(outputs[i].scalar_type() == inputs[i].scalar_type(), "distx ", op, ": output ",
                     i, " has dtype ", outputs[i].scalar_type(), " but input ", i, " has ",
                     inputs[i].scalar_type());
    TORCH_CHECK_VALUE(outputs[i].numel() == inputs[i].numel() * size_, "distx ", op, ": output ", i,
                      " has ", outputs[i].numel(),
                      " elements, expected world size x input = ", inputs[i].numel() * size_);
  }
  const std::vector<at::Tensor> ins = inputs, outs = outputs;
  // One NCCL group: an all-gather per pair, fused into one launch.
  return launch(c10d::OpType::COALESCED, op, opts.timeout, ins, outs,
                [ins, outs](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  std::vector<Contig> staged;
                  std::vector<at::Tensor> srcs;
                  staged.reserve(outs.size());
                  comm.groupStart();
                  for (size_t i = 0; i < ins.size(); ++i) {
                    srcs.push_back(flatContiguous(ins[i]));
                    staged.emplace_back(outs[i]);
                    comm.allGather(srcs.back().data_ptr(), staged.back().buf.data_ptr(),
                                   count(srcs.back()), dtypeOf(srcs.back()), s, dl);
                  }
                  comm.groupEnd(dl);
                  for (auto& c : staged)
                    c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::_reduce_scatter_base(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::_REDUCE_SCATTER_BASE, "reduce_scatter_tensor", {input}, {output},
                  [&](const HostMirror& h) {
                    at::Tensor o = h(output), i = h(input);
                    return deps_.host->_reduce_scatter_base(o, i, opts);
                  });
  const char* op = "reduce_scatter_tensor";
  checkTensor(input, op);
  checkTensor(output, op);
  TORCH_CHECK_TYPE(output.scalar_type() == input.scalar_type(), "distx ", op, ": output dtype ",
                   output.scalar_type(), " differs from input dtype ", input.scalar_type());
  TORCH_CHECK_VALUE(input.numel() == output.numel() * size_, "distx ", op, ": input has ",
                    input.numel(),
                    " elements, expected world size x output = ", output.numel() * size_);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, input.scalar_type(), op);
  const at::Tensor in = input, out = output;
  return launch(c10d::OpType::_REDUCE_SCATTER_BASE, op, opts.timeout, {in}, {out},
                [in, out, spec](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  at::Tensor src = spec.preMul ? in.mul(spec.factor) : in;
                  src = flatContiguous(src);
                  Contig c(out);
                  comm.reduceScatter(src.data_ptr(), c.buf.data_ptr(), count(c.buf), dtypeOf(c.buf),
                                     spec.op, s, dl);
                  c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::reduce_scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::REDUCE_SCATTER, "reduce_scatter", flatten(inputs), outputs,
                  [&](const HostMirror& h) {
                    auto o = mirrorAll(h, outputs);
                    auto i = mirrorAll(h, inputs);
                    return deps_.host->reduce_scatter(o, i, opts);
                  });
  const char* op = "reduce_scatter";
  const at::Tensor& out = singleTensor(outputs, op);
  TORCH_CHECK_VALUE(inputs.size() == 1, "distx ", op, ": expected one input list, got ",
                    inputs.size());
  TORCH_CHECK_VALUE(static_cast<int>(inputs[0].size()) == size_, "distx ", op,
                    ": the input list has ", inputs[0].size(), " tensors but the group has ", size_,
                    " ranks");
  checkSameTypeAndSize(inputs[0], out, op);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, out.scalar_type(), op);
  const auto ins = inputs[0];
  return launch(c10d::OpType::REDUCE_SCATTER, op, opts.timeout, ins, {out},
                [ins, out, spec](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  std::vector<at::Tensor> flat;
                  for (const auto& t : ins)
                    flat.push_back(t.reshape({-1}));
                  at::Tensor packed = at::cat(flat);
                  if (spec.preMul) packed.mul_(spec.factor);
                  Contig c(out);
                  comm.reduceScatter(packed.data_ptr(), c.buf.data_ptr(), count(c.buf),
                                     dtypeOf(c.buf), spec.op, s, dl);
                  c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::REDUCE_SCATTER_TENSOR_COALESCED, "reduce_scatter_tensor_coalesced",
                  inputs, outputs, [&](const HostMirror& h) {
                    auto o = mirrorAll(h, outputs);
                    auto i = mirrorAll(h, inputs);
                    return deps_.host->reduce_scatter_tensor_coalesced(o, i, opts);
                  });
  const char* op = "reduce_scatter_tensor_coalesced";
  TORCH_CHECK_VALUE(outputs.size() == inputs.size(), "distx ", op, ": got ", outputs.size(),
                    " outputs for ", inputs.size(), " inputs");
  std::vector<ReduceSpec> specs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    checkTensor(inputs[i], op);
    checkTensor(outputs[i], op);
    TORCH_CHECK_TYPE(outputs[i].scalar_type() == inputs[i].scalar_type(), "distx ", op,
                     ": output dtype ", outputs[i].scalar_type(), " differs from input dtype ",
                     inputs[i].scalar_type());
    TORCH_CHECK_VALUE(inputs[i].numel() == outputs[i].numel() * size_, "distx ", op, ": input ", i,
                      " has ", inputs[i].numel(),
                      " elements, expected world size x output = ", outputs[i].numel() * size_);
    specs.push_back(ncclReduceSpec(opts.reduceOp, inputs[i].scalar_type(), op));
  }
  const std::vector<at::Tensor> ins = inputs, outs = outputs;
  // One NCCL group: a reduce-scatter per pair, fused into one launch.
  return launch(c10d::OpType::REDUCE_SCATTER_TENSOR_COALESCED, op, opts.timeout, ins, outs,
                [ins, outs, specs](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  std::vector<at::Tensor> srcs;
                  std::vector<Contig> staged;
                  staged.reserve(outs.size());
                  for (size_t i = 0; i < ins.size(); ++i) {
                    at::Tensor src = specs[i].preMul ? ins[i].mul(specs[i].factor) : ins[i];
                    srcs.push_back(flatContiguous(src));
                    staged.emplace_back(outs[i]);
                  }
                  comm.groupStart();
                  for (size_t i = 0; i < ins.size(); ++i) {
                    comm.reduceScatter(srcs[i].data_ptr(), staged[i].buf.data_ptr(),
                                       count(staged[i].buf), dtypeOf(staged[i].buf), specs[i].op, s,
                                       dl);
                  }
                  comm.groupEnd(dl);
                  for (auto& c : staged)
                    c.writeBack();
                });
}

}  // namespace distx
