// CudaBackend ops built from NCCL send/recv: gather, scatter, all_to_all(_single),
// and send/recv themselves. Each collective is one NCCL group (ncclGroupStart
// .. ncclGroupEnd), so its sends and receives progress together, whatever
// their order; the rank's own block is a device copy.
//
// Limitation: send/recv are ordered on the group's one internal stream, so a
// rank that posts a recv before the matching send of another pair can deadlock
// the stream where NCCL's own backend (a communicator per pair) would not;
// batch_isend_irecv is not grouped. Recv from any source is not supported by
// NCCL (ValueError, as ProcessGroupNCCL).
#include <c10/util/Exception.h>

#include "backend/contig.hpp"
#include "backend/cuda/cuda_backend.hpp"

namespace distx {
namespace {

int checkRoot(int64_t root, int size, const char* op) {
  TORCH_CHECK_VALUE(root >= 0 && root < size, "distx ", op, ": root rank ", root, " is outside 0..",
                    size - 1);
  return static_cast<int>(root);
}

uint8_t* bytePtr(const at::Tensor& t) {
  return static_cast<uint8_t*>(t.data_ptr());
}

}  // namespace

c10::intrusive_ptr<c10d::Work> CudaBackend::gather(std::vector<std::vector<at::Tensor>>& outputs,
                                                   std::vector<at::Tensor>& inputs,
                                                   const c10d::GatherOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::GATHER, "gather", inputs, flatten(outputs),
                  [&](const HostMirror& h) {
                    auto o = mirrorAll(h, outputs);
                    auto i = mirrorAll(h, inputs);
                    return deps_.host->gather(o, i, opts);
                  });
  const char* op = "gather";
  const at::Tensor& in = singleTensor(inputs, op);
  const int root = checkRoot(opts.rootRank, size_, op);
  std::vector<at::Tensor> outs;
  if (rank_ == root) {
    TORCH_CHECK_VALUE(outputs.size() == 1 && static_cast<int>(outputs[0].size()) == size_, "distx ",
                      op, ": the root needs one output list of ", size_,
                      " tensors (the group size)");
    checkSameTypeAndSize(outputs[0], in, op);
    outs = outputs[0];
  } else {
    TORCH_CHECK_VALUE(outputs.empty() || (outputs.size() == 1 && outputs[0].empty()), "distx ", op,
                      ": only the root (rank ", root, ") passes an output list");
  }
  const int me = rank_;
  return launch(c10d::OpType::GATHER, op, opts.timeout, {in}, outs,
                [in, outs, root, me](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  const at::Tensor src = flatContiguous(in);
                  const size_t bytes = src.nbytes();
                  if (me != root) {
                    comm.groupStart();
                    comm.send(src.data_ptr(), bytes, root, s, dl);
                    comm.groupEnd(dl);
                    return;
                  }
                  ContigList cs(outs);
                  comm.groupStart();
                  for (int r = 0; r < comm.size(); ++r) {
                    if (r != me) comm.recv(cs.blocks[r], bytes, r, s, dl);
                  }
                  comm.groupEnd(dl);
                  cs.items[me].buf.view({-1}).copy_(src);
                  cs.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::scatter(std::vector<at::Tensor>& outputs,
                                                    std::vector<std::vector<at::Tensor>>& inputs,
                                                    const c10d::ScatterOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::SCATTER, "scatter", flatten(inputs), outputs,
                  [&](const HostMirror& h) {
                    auto o = mirrorAll(h, outputs);
                    auto i = mirrorAll(h, inputs);
                    return deps_.host->scatter(o, i, opts);
                  });
  const char* op = "scatter";
  const at::Tensor& out = singleTensor(outputs, op);
  const int root = checkRoot(opts.rootRank, size_, op);
  std::vector<at::Tensor> ins;
  if (rank_ == root) {
    TORCH_CHECK_VALUE(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_, "distx ",
                      op, ": the root needs one input list of ", size_,
                      " tensors (the group size)");
    checkSameTypeAndSize(inputs[0], out, op);
    ins = inputs[0];
  } else {
    TORCH_CHECK_VALUE(inputs.empty() || (inputs.size() == 1 && inputs[0].empty()), "distx ", op,
                      ": only the root (rank ", root, ") passes an input list");
  }
  const int me = rank_;
  return launch(c10d::OpType::SCATTER, op, opts.timeout, ins, {out},
                [ins, out, root, me](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  Contig c(out);
                  const size_t bytes = c.buf.nbytes();
                  if (me != root) {
                    comm.groupStart();
                    comm.recv(c.buf.data_ptr(), bytes, root, s, dl);
                    comm.groupEnd(dl);
                    c.writeBack();
                    return;
                  }
                  std::vector<at::Tensor> srcs;
                  for (const auto& t : ins)
                    srcs.push_back(flatContiguous(t));
                  comm.groupStart();
                  for (int r = 0; r < comm.size(); ++r) {
                    if (r != me) comm.send(srcs[r].data_ptr(), bytes, r, s, dl);
                  }
                  comm.groupEnd(dl);
                  c.buf.view({-1}).copy_(srcs[me]);
                  c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::alltoall_base(at::Tensor& output, at::Tensor& input,
                                                          std::vector<int64_t>& outputSplitSizes,
                                                          std::vector<int64_t>& inputSplitSizes,
                                                          const c10d::AllToAllOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::ALLTOALL_BASE, "all_to_all_single", {input}, {output},
                  [&](const HostMirror& h) {
                    at::Tensor o = h(output), i = h(input);
                    return deps_.host->alltoall_base(o, i, outputSplitSizes, inputSplitSizes, opts);
                  });
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
  const int me = rank_;
  return launch(c10d::OpType::ALLTOALL_BASE, op, opts.timeout, {in}, {out},
                [in, out, sendBytes, recvBytes, me](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  const at::Tensor src = in.is_alias_of(out) ? contiguousCopy(in) : in.contiguous();
                  Contig c(out);
                  size_t so = 0, ro = 0, selfSend = 0, selfRecv = 0;
                  comm.groupStart();
                  for (int r = 0; r < comm.size(); ++r) {
                    if (r == me) {
                      selfSend = so;
                      selfRecv = ro;
                    } else {
                      if (sendBytes[r]) comm.send(bytePtr(src) + so, sendBytes[r], r, s, dl);
                      if (recvBytes[r]) comm.recv(bytePtr(c.buf) + ro, recvBytes[r], r, s, dl);
                    }
                    so += sendBytes[r];
                    ro += recvBytes[r];
                  }
                  comm.groupEnd(dl);
                  const int64_t own = static_cast<int64_t>(sendBytes[me]);
                  if (own > 0) {
                    c.buf.view({-1})
                        .view(at::kByte)
                        .narrow(0, selfRecv, own)
                        .copy_(src.view({-1}).view(at::kByte).narrow(0, selfSend, own));
                  }
                  c.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::alltoall(std::vector<at::Tensor>& outputs,
                                                     std::vector<at::Tensor>& inputs,
                                                     const c10d::AllToAllOptions& opts) {
  if (multiHost())
    return staged(c10d::OpType::ALLTOALL, "all_to_all", inputs, outputs, [&](const HostMirror& h) {
      auto o = mirrorAll(h, outputs);
      auto i = mirrorAll(h, inputs);
      return deps_.host->alltoall(o, i, opts);
    });
  const char* op = "all_to_all";
  TORCH_CHECK_VALUE(
      static_cast<int>(inputs.size()) == size_ && static_cast<int>(outputs.size()) == size_,
      "distx ", op, ": expected ", size_, " input and output tensors, got ", inputs.size(), " and ",
      outputs.size());
  for (int r = 0; r < size_; ++r) {
    checkTensor(inputs[r], op);
    checkTensor(outputs[r], op);
    TORCH_CHECK_TYPE(inputs[r].scalar_type() == inputs[0].scalar_type() &&
                         outputs[r].scalar_type() == inputs[0].scalar_type(),
                     "distx ", op, ": all tensors must have one dtype");
  }
  const std::vector<at::Tensor> ins = inputs, outs = outputs;
  const int me = rank_;
  return launch(c10d::OpType::ALLTOALL, op, opts.timeout, ins, outs,
                [ins, outs, me](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  std::vector<at::Tensor> srcs;
                  for (const auto& t : ins)
                    srcs.push_back(t.contiguous());
                  ContigList cs(outs);
                  comm.groupStart();
                  for (int r = 0; r < comm.size(); ++r) {
                    if (r == me) continue;
                    if (srcs[r].nbytes()) comm.send(srcs[r].data_ptr(), srcs[r].nbytes(), r, s, dl);
                    const size_t n = cs.items[r].buf.nbytes();
                    if (n) comm.recv(cs.blocks[r], n, r, s, dl);
                  }
                  comm.groupEnd(dl);
                  TORCH_CHECK_VALUE(srcs[me].numel() == cs.items[me].buf.numel(), "distx ",
                                    "all_to_all: rank ", me,
                                    "'s own input and output differ in size");
                  cs.items[me].buf.copy_(srcs[me].view(cs.items[me].buf.sizes()));
                  cs.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::send(std::vector<at::Tensor>& tensors, int dstRank,
                                                 int tag) {
  if (multiHost())
    return staged(c10d::OpType::SEND, "send", tensors, {}, [&](const HostMirror& h) {
      auto v = mirrorAll(h, tensors);
      return deps_.host->send(v, dstRank, tag);
    });
  const char* op = "send";
  const at::Tensor& t = singleTensor(tensors, op);
  TORCH_CHECK_VALUE(dstRank >= 0 && dstRank < size_ && dstRank != rank_, "distx ", op,
                    ": destination rank ", dstRank, " is not another rank of 0..", size_ - 1);
  return launch(c10d::OpType::SEND, op, c10d::kUnsetTimeout, {t}, {t},
                [t, dstRank](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                  const at::Tensor src = t.contiguous();
                  comm.groupStart();
                  comm.send(src.data_ptr(), src.nbytes(), dstRank, s, dl);
                  comm.groupEnd(dl);
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::recv(std::vector<at::Tensor>& tensors, int srcRank,
                                                 int tag) {
  if (multiHost())
    return staged(c10d::OpType::RECV, "recv", {}, tensors, [&](const HostMirror& h) {
      auto v = mirrorAll(h, tensors);
      return deps_.host->recv(v, srcRank, tag);
    });
  const char* op = "recv";
  const at::Tensor& t = singleTensor(tensors, op);
  TORCH_CHECK_VALUE(srcRank >= 0 && srcRank < size_ && srcRank != rank_, "distx ", op,
                    ": source rank ", srcRank, " is not another rank of 0..", size_ - 1);
  auto work = launch(c10d::OpType::RECV, op, c10d::kUnsetTimeout, {}, {t},
                     [t, srcRank](nccl::Comm& comm, nccl::Stream s, Deadline dl) {
                       Contig c(t);
                       comm.groupStart();
                       comm.recv(c.buf.data_ptr(), c.buf.nbytes(), srcRank, s, dl);
                       comm.groupEnd(dl);
                       c.writeBack();
                     });
  work->setSourceRank(srcRank);
  return work;
}

c10::intrusive_ptr<c10d::Work> CudaBackend::recvAnysource(std::vector<at::Tensor>& tensors,
                                                          int tag) {
  if (multiHost())  // the CPU path can receive from any source
    return staged(c10d::OpType::RECVANYSOURCE, "recv", {}, tensors, [&](const HostMirror& h) {
      auto v = mirrorAll(h, tensors);
      return deps_.host->recvAnysource(v, tag);
    });
  TORCH_CHECK_VALUE(false,
                    "distx recv: receiving CUDA tensors from any source is not supported (NCCL "
                    "needs the source rank); pass src=");
}

}  // namespace distx
