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
  const char* op = "all_reduce";
  if (multiHost())
    return onHost(c10d::OpType::ALLREDUCE, op, {}, tensors, &c10d::Backend::allreduce, tensors,
                  opts);
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
  const char* op = "all_reduce_coalesced";
  if (multiHost())
    return onHost(c10d::OpType::ALLREDUCE_COALESCED, op, {}, tensors,
                  &c10d::Backend::allreduce_coalesced, tensors, opts);
  checkOneDtype(tensors, op);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, tensors[0].scalar_type(), op);
  const std::vector<at::Tensor> ts = tensors;
  return launch(c10d::OpType::ALLREDUCE_COALESCED, op, opts.timeout, {}, ts,
                [ts, spec](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  at::Tensor buf = concatFlat(ts);
                  if (spec.preMul) buf.mul_(spec.factor);
                  comm.allReduce(buf.data_ptr(), buf.data_ptr(), count(buf), dtypeOf(buf), spec.op,
                                 s, dl);
                  splitInto(buf, ts);
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::broadcast(std::vector<at::Tensor>& tensors,
                                                      const c10d::BroadcastOptions& opts) {
  const char* op = "broadcast";
  if (multiHost())
    return onHost(c10d::OpType::BROADCAST, op, {}, tensors, &c10d::Backend::broadcast, tensors,
                  opts);
  const at::Tensor& t = singleTensor(tensors, op);
  const int root = checkRoot(opts.rootRank, opts.rootTensor, size_, op);
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
  const char* op = "reduce";
  if (multiHost())
    return onHost(c10d::OpType::REDUCE, op, {}, tensors, &c10d::Backend::reduce, tensors, opts);
  const at::Tensor& t = singleTensor(tensors, op);
  const int root = checkRoot(opts.rootRank, opts.rootTensor, size_, op);
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, t.scalar_type(), op);
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
  const char* op = "all_gather";
  if (multiHost())
    return onHost(c10d::OpType::ALLGATHER, op, inputs, flatten(outputs), &c10d::Backend::allgather,
                  outputs, inputs, opts);
  const at::Tensor& in = singleTensor(inputs, op);
  const auto outs = groupList(outputs, in, size_, op, "output");
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
  const char* op = "all_gather_into_tensor";
  if (multiHost())
    return onHost(c10d::OpType::_ALLGATHER_BASE, op, {input}, {output},
                  &c10d::Backend::_allgather_base, output, input, opts);
  checkAllgatherPair(output, input, size_, op);
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
  const char* op = "all_gather_coalesced";
  if (multiHost())
    return onHost(c10d::OpType::ALLGATHER_COALESCED, op, inputs, flatten(outputLists),
                  &c10d::Backend::allgather_coalesced, outputLists, inputs, opts);
  const std::vector<at::Tensor> flatOuts =
      allgatherCoalescedOutputs(outputLists, inputs, size_, op);
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
  const char* op = "all_gather_into_tensor_coalesced";
  if (multiHost())
    return onHost(c10d::OpType::COALESCED, op, inputs, outputs,
                  &c10d::Backend::allgather_into_tensor_coalesced, outputs, inputs, opts);
  checkAllgatherPairs(outputs, inputs, size_, op);
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
  const char* op = "reduce_scatter_tensor";
  if (multiHost())
    return onHost(c10d::OpType::_REDUCE_SCATTER_BASE, op, {input}, {output},
                  &c10d::Backend::_reduce_scatter_base, output, input, opts);
  checkReduceScatterPair(output, input, size_, op);
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
  const char* op = "reduce_scatter";
  if (multiHost())
    return onHost(c10d::OpType::REDUCE_SCATTER, op, flatten(inputs), outputs,
                  &c10d::Backend::reduce_scatter, outputs, inputs, opts);
  const at::Tensor& out = singleTensor(outputs, op);
  const auto ins = groupList(inputs, out, size_, op, "input");
  const ReduceSpec spec = ncclReduceSpec(opts.reduceOp, out.scalar_type(), op);
  return launch(c10d::OpType::REDUCE_SCATTER, op, opts.timeout, ins, {out},
                [ins, out, spec](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  at::Tensor packed = concatFlat(ins);
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
    return onHost(c10d::OpType::REDUCE_SCATTER_TENSOR_COALESCED, "reduce_scatter_tensor_coalesced",
                  inputs, outputs, &c10d::Backend::reduce_scatter_tensor_coalesced, outputs, inputs,
                  opts);
  const char* op = "reduce_scatter_tensor_coalesced";
  const std::vector<ReduceSpec> specs =
      checkReduceScatterPairs(outputs, inputs, size_, opts.reduceOp, ncclReduceSpec, op);
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
