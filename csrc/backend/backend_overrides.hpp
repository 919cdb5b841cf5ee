// The c10d::Backend collectives that both halves of a distx group override.
//
// ProcessGroupDistx (the CPU half, and the dispatcher of Note [Device
// dispatch]) and CudaBackend (backend/cuda/, Note [CUDA path]) serve the same
// calls: each of ProcessGroupDistx's overrides forwards CUDA tensors to the
// CudaBackend override of the same name. C++ makes each class declare the
// overrides it defines, so the one list below is spelled once and expanded in
// both class bodies,
//
//   class CudaBackend final : public c10d::Backend {
//    public:
//     DISTX_BACKEND_OVERRIDES();
//
// and an op added to one half is declared in the other too (the build then
// asks for its definition there). A shared base class would not do: a derived
// class still has to declare every virtual it overrides. What only one half
// has (barrier, monitoredBarrier, sequence numbers) each declares itself.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <vector>

// Expands to the declarations, the last one without its semicolon (the use
// site writes it).
#define DISTX_BACKEND_OVERRIDES()                                                                 \
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,                      \
                                           const c10d::BroadcastOptions& opts) override;          \
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,                      \
                                           const c10d::AllreduceOptions& opts) override;          \
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(                                             \
      std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) override;    \
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors,                         \
                                        const c10d::ReduceOptions& opts) override;                \
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,         \
                                           std::vector<at::Tensor>& inputs,                       \
                                           const c10d::AllgatherOptions& opts) override;          \
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,           \
                                                 const c10d::AllgatherOptions& opts) override;    \
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(                                             \
      std::vector<std::vector<at::Tensor>>& outputLists, std::vector<at::Tensor>& inputs,         \
      const c10d::AllgatherOptions& opts) override;                                               \
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(                                 \
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,                          \
      const c10d::AllgatherOptions& opts) override;                                               \
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,                 \
                                                std::vector<std::vector<at::Tensor>>& inputs,     \
                                                const c10d::ReduceScatterOptions& opts) override; \
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(                                            \
      at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) override;    \
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(                                 \
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,                          \
      const c10d::ReduceScatterOptions& opts) override;                                           \
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs,            \
                                        std::vector<at::Tensor>& inputs,                          \
                                        const c10d::GatherOptions& opts) override;                \
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs,                        \
                                         std::vector<std::vector<at::Tensor>>& inputs,            \
                                         const c10d::ScatterOptions& opts) override;              \
  c10::intrusive_ptr<c10d::Work> alltoall_base(                                                   \
      at::Tensor& output, at::Tensor& input, std::vector<int64_t>& outputSplitSizes,              \
      std::vector<int64_t>& inputSplitSizes, const c10d::AllToAllOptions& opts) override;         \
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs,                       \
                                          std::vector<at::Tensor>& inputs,                        \
                                          const c10d::AllToAllOptions& opts) override;            \
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dstRank, int tag)     \
      override;                                                                                   \
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int srcRank, int tag)     \
      override;                                                                                   \
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override
