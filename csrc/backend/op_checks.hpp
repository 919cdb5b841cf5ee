// Note [One check layer]
// The argument checks of every collective, device-neutral: ProcessGroupDistx's
// CPU overrides and CudaBackend's (backend/cuda/) call the same function for
// the same op, on the caller's thread, before a sequence number is taken or
// anything is queued, so both devices raise the same ValueError / TypeError
// text (asserted once, on the CPU, by tests/python/test_op_checks.py). Each
// function takes the call's tensors, options, rank and group size and the
// op's name, and returns what the op needs (the root, the list to work on,
// the block sizes). What only one device has stays with it: NCCL's reduce
// support (ncclReduceSpec), one CUDA device per call (commonCudaDevice),
// receiving from any source. The per-tensor checks and the dtype and reduce
// op translations are tensor_checks.hpp.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include <string>
#include <vector>

#include "backend/tensor_checks.hpp"

namespace distx {

// Whether the group can still run `op` (null: no op in the message): a
// RuntimeError once it was shut down or aborted (`stopping`), a
// DistBackendError once the CUDA half's watchdog broke it (`broken`: why).
void checkUsable(const char* op, bool stopping, const std::string& broken = {});

// ---- ranks
// The root rank, in 0..size-1 (ValueError); with `rootTensor` (broadcast,
// reduce), that must be 0 as well.
int checkRoot(int64_t root, int size, const char* op);
int checkRoot(int64_t root, int64_t rootTensor, int size, const char* op);
// The peer of a send ("destination") or recv ("source"), in 0..size-1; this
// rank itself only where `allowSelf`.
int checkPeer(int peer, int rank, int size, const char* op, const char* which,
              bool allowSelf = true);

// ---- lists
// all_reduce_coalesced: at least one tensor, all of one dtype.
void checkOneDtype(const std::vector<at::Tensor>& ts, const char* op);
// all_gather's outputs ("output"), reduce_scatter's inputs ("input"): one list
// of `size` tensors like `ref`; returns it.
const std::vector<at::Tensor>& groupList(const std::vector<std::vector<at::Tensor>>& lists,
                                         const at::Tensor& ref, int size, const char* op,
                                         const char* which);
// gather's outputs ("output"), scatter's inputs ("input"), Gloo's rule: the
// root passes one list of `size` tensors like `ref`, the others none; returns
// the root's list (empty elsewhere).
std::vector<at::Tensor> rootList(const std::vector<std::vector<at::Tensor>>& lists,
                                 const at::Tensor& ref, int root, int rank, int size,
                                 const char* op, const char* which);
// all_gather_coalesced: outputLists[src][i] receives inputs[i] of rank src;
// returns every output, flat.
std::vector<at::Tensor> allgatherCoalescedOutputs(
    const std::vector<std::vector<at::Tensor>>& outputLists, const std::vector<at::Tensor>& inputs,
    int size, const char* op);

// ---- output / input pairs
// all_gather_into_tensor: `out` holds `size` x `in`, one dtype.
void checkAllgatherPair(const at::Tensor& out, const at::Tensor& in, int size, const char* op);
// reduce_scatter_tensor: `in` holds `size` x `out`, one dtype.
void checkReduceScatterPair(const at::Tensor& out, const at::Tensor& in, int size, const char* op);
// all_gather_into_tensor_coalesced: as many outputs as inputs, each pair as
// checkAllgatherPair (the messages name the pair).
void checkAllgatherPairs(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& ins,
                         int size, const char* op);
// reduce_scatter_tensor_coalesced: as many outputs as inputs, each pair as
// checkReduceScatterPair; returns each pair's reduction as `toSpec` (the
// device's: toReduceOp or ncclReduceSpec) makes it, pair by pair.
using ReduceSpecFn = ReduceSpec (*)(const c10d::ReduceOp&, at::ScalarType, const char*);
std::vector<ReduceSpec> checkReduceScatterPairs(const std::vector<at::Tensor>& outs,
                                                const std::vector<at::Tensor>& ins, int size,
                                                const c10d::ReduceOp& reduceOp, ReduceSpecFn toSpec,
                                                const char* op);

// ---- all_to_all
// all_to_all_single: the bytes this rank sends to / receives from each rank
// (split sizes along dim 0; none: equal blocks).
struct AlltoallBytes {
  std::vector<size_t> send, recv;
};
AlltoallBytes alltoallSingleBytes(const at::Tensor& out, const at::Tensor& in,
                                  const std::vector<int64_t>& outSplits,
                                  const std::vector<int64_t>& inSplits, int rank, int size,
                                  const char* op);
// all_to_all: `size` inputs and outputs of one dtype; this rank's own block
// is as large each way.
void checkAlltoall(const std::vector<at::Tensor>& outs, const std::vector<at::Tensor>& ins,
                   int rank, int size, const char* op);

}  // namespace distx
