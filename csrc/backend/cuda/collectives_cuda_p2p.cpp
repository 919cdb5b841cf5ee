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

uint8_t* bytePtr(const at::Tensor& t) {
  return static_cast<uint8_t*>(t.data_ptr());
}

}  // namespace

c10::intrusive_ptr<c10d::Work> CudaBackend::gather(std::vector<std::vector<at::Tensor>>& outputs,
                                                   std::vector<at::Tensor>& inputs,
                                                   const c10d::GatherOptions& opts) {
  const char* op = "gather";
  if (multiHost())
    return onHost(c10d::OpType::GATHER, op, inputs, flatten(outputs), &c10d::Backend::gather,
                  outputs, inputs, opts);
  const at::Tensor& in = singleTensor(inputs, op);
  const int root = checkRoot(opts.rootRank, size_, op);
  const std::vector<at::Tensor> outs = rootList(outputs, in, root, rank_, size_, op, "output");
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
  const char* op = "scatter";
  if (multiHost())
    return onHost(c10d::OpType::SCATTER, op, flatten(inputs), outputs, &c10d::Backend::scatter,
                  outputs, inputs, opts);
  const at::Tensor& out = singleTensor(outputs, op);
  const int root = checkRoot(opts.rootRank, size_, op);
  const std::vector<at::Tensor> ins = rootList(inputs, out, root, rank_, size_, op, "input");
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
  const char* op = "all_to_all_single";
  if (multiHost())
    return onHost(c10d::OpType::ALLTOALL_BASE, op, {input}, {output}, &c10d::Backend::alltoall_base,
                  output, input, outputSplitSizes, inputSplitSizes, opts);
  const AlltoallBytes bytes =
      alltoallSingleBytes(output, input, outputSplitSizes, inputSplitSizes, rank_, size_, op);
  const at::Tensor in = input, out = output;
  const int me = rank_;
  return launch(c10d::OpType::ALLTOALL_BASE, op, opts.timeout, {in}, {out},
                [in, out, sendBytes = bytes.send, recvBytes = bytes.recv, me](
                    nccl::Comm& comm, nccl::Stream s, Deadline dl) {
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
  const char* op = "all_to_all";
  if (multiHost())
    return onHost(c10d::OpType::ALLTOALL, op, inputs, outputs, &c10d::Backend::alltoall, outputs,
                  inputs, opts);
  checkAlltoall(outputs, inputs, rank_, size_, op);
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
                  cs.items[me].buf.copy_(srcs[me].view(cs.items[me].buf.sizes()));
                  cs.writeBack();
                });
}

c10::intrusive_ptr<c10d::Work> CudaBackend::send(std::vector<at::Tensor>& tensors, int dstRank,
                                                 int tag) {
  const char* op = "send";
  if (multiHost())
    return onHost(c10d::OpType::SEND, op, tensors, {}, &c10d::Backend::send, tensors, dstRank, tag);
  const at::Tensor& t = singleTensor(tensors, op);
  checkPeer(dstRank, rank_, size_, op, "destination", /*allowSelf=*/false);
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
  const char* op = "recv";
  if (multiHost())
    return onHost(c10d::OpType::RECV, op, {}, tensors, &c10d::Backend::recv, tensors, srcRank, tag);
  const at::Tensor& t = singleTensor(tensors, op);
  checkPeer(srcRank, rank_, size_, op, "source", /*allowSelf=*/false);
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
    return onHost(c10d::OpType::RECVANYSOURCE, "recv", {}, tensors, &c10d::Backend::recvAnysource,
                  tensors, tag);
  TORCH_CHECK_VALUE(false,
                    "distx recv: receiving CUDA tensors from any source is not supported (NCCL "
                    "needs the source rank); pass src=");
}

}  // namespace distx
