// Sparse COO all_reduce (ReduceOp.SUM), the collective behind DDP with
// nn.Embedding(sparse=True) gradients.
//
// Note [Sparse all-reduce]
// Sparse tensors differ in nnz from rank to rank, so the sum cannot be reduced
// element-wise on the wire; every rank gathers every rank's (indices, values)
// and sums locally, as Gloo does (same result, same placement):
//   1. coalesce the input locally (duplicate indices summed, indices sorted);
//   2. all-gather a fixed-size header: dtype, sparse_dim, dense_dim, sizes, nnz.
//      Every rank sees every header, so a mismatch in anything but nnz makes
//      every rank throw the same error naming the ranks, before any data moves
//      (no hang, no buffer sized from a peer's different shape);
//   3. m = max nnz. If m > 0, all-gather one byte block per rank:
//        [ indices int64 sparse_dim x m | values m x dense sizes | pad to 8 ]
//      rank r fills the first nnz_r columns / rows; the rest is padding;
//   4. sum the gathered parts in rank order, each one coalesced, with sparse
//      add: acc = ((part_0 + part_1) + part_2) + ... Rank order makes every
//      rank's result bit-identical, and equal to Gloo's (which folds the same
//      way); concatenating and coalescing once would sum duplicates in sort
//      order instead and round differently for 3+ ranks;
//   5. copy the (coalesced) sum into the input tensor in place: its indices and
//      values are replaced, so work.result() and the Future yield it.
// The header round uses the control tag space and the data round the
// collective one, so their per-step slots never meet.
//
// Cost: two ring all-gathers, P-1 steps each; each rank sends
// (P-1)·(header + 8·sparse_dim·m + m·dense_numel·elem) bytes, then P-1 sparse
// additions of at most total-nnz rows.
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <sstream>

#include "backend/contig.hpp"
#include "backend/process_group_distx.hpp"
#include "backend/tensor_checks.hpp"

namespace distx {
namespace {

constexpr int64_t kMaxSparseDims = 64;  // sizes a header can carry

struct SparseHeader {
  int64_t dtype;
  int64_t sparseDim;
  int64_t denseDim;
  int64_t nnz;
  int64_t sizes[kMaxSparseDims];
};

SparseHeader makeHeader(const at::Tensor& t) {
  SparseHeader h{};
  h.dtype = static_cast<int64_t>(t.scalar_type());
  h.sparseDim = t.sparse_dim();
  h.denseDim = t.dense_dim();
  h.nnz = t._nnz();
  for (int64_t d = 0; d < t.dim(); ++d)
    h.sizes[d] = t.size(d);
  return h;
}

bool sameLayout(const SparseHeader& a, const SparseHeader& b) {
  return a.dtype == b.dtype && a.sparseDim == b.sparseDim && a.denseDim == b.denseDim &&
         std::equal(a.sizes, a.sizes + kMaxSparseDims, b.sizes);
}

std::string describe(const SparseHeader& h) {
  std::ostringstream os;
  os << static_cast<at::ScalarType>(h.dtype) << " size [";
  for (int64_t d = 0; d < h.sparseDim + h.denseDim; ++d)
    os << (d ? ", " : "") << h.sizes[d];
  os << "] sparse_dim " << h.sparseDim << " dense_dim " << h.denseDim;
  return os.str();
}

// Step 2: every rank's header; throws on the same mismatch on every rank.
std::vector<SparseHeader> exchangeHeaders(CollectiveContext& ctx, const SparseHeader& mine) {
  const int P = ctx.size();
  std::vector<SparseHeader> all(P);
  all[ctx.rank()] = mine;
  std::vector<void*> blocks;
  for (auto& h : all)
    blocks.push_back(&h);
  CollectiveContext control = ctx;
  control.kind = tag::Kind::kControl;
  allgatherRing(control, blocks, sizeof(SparseHeader));
  for (int r = 1; r < P; ++r) {
    if (sameLayout(all[r], all[0])) continue;
    std::ostringstream os;
    os << "sparse all_reduce: the ranks passed different sparse tensors (dtype, size, sparse_dim "
          "and dense_dim must match; only nnz may differ):";
    for (int i = 0; i < P; ++i)
      os << "\n  rank " << i << ": " << describe(all[i]) << " nnz " << all[i].nnz;
    throw InvalidArgument(os.str());
  }
  return all;
}

// Steps 3-4 on a coalesced input: the coalesced sum over every rank.
at::Tensor sparseSum(CollectiveContext& ctx, const at::Tensor& mine) {
  const int P = ctx.size(), me = ctx.rank();
  const auto headers = exchangeHeaders(ctx, makeHeader(mine));
  int64_t m = 0;
  for (const auto& h : headers)
    m = std::max(m, h.nnz);
  if (P == 1 || m == 0) return mine;

  const int64_t sparseDim = mine.sparse_dim();
  std::vector<int64_t> valueShape{m};
  for (int64_t d = sparseDim; d < mine.dim(); ++d)
    valueShape.push_back(mine.size(d));
  const int64_t rowNumel = std::accumulate(valueShape.begin() + 1, valueShape.end(), int64_t{1},
                                           std::multiplies<int64_t>());
  const int64_t idxBytes = sparseDim * m * static_cast<int64_t>(sizeof(int64_t));
  const int64_t valBytes = m * rowNumel * static_cast<int64_t>(mine.element_size());
  const int64_t block = (idxBytes + valBytes + 7) / 8 * 8;  // next block's int64s stay aligned

  at::Tensor buf = parked(at::empty({block * P}, at::kByte));
  auto indicesOf = [&](int r) {
    return buf.narrow(0, r * block, idxBytes).view(at::kLong).view({sparseDim, m});
  };
  auto valuesOf = [&](int r) {
    return buf.narrow(0, r * block + idxBytes, valBytes).view(mine.scalar_type()).view(valueShape);
  };
  const int64_t n = mine._nnz();
  indicesOf(me).narrow(1, 0, n).copy_(mine._indices());
  valuesOf(me).narrow(0, 0, n).copy_(mine._values());
  std::vector<void*> blocks;
  for (int r = 0; r < P; ++r)
    blocks.push_back(static_cast<uint8_t*>(buf.data_ptr()) + r * block);
  allgatherRing(ctx, blocks, static_cast<size_t>(block));

  at::Tensor acc;
  for (int r = 0; r < P; ++r) {
    const int64_t nnz = headers[r].nnz;
    if (nnz == 0) continue;  // adding nothing leaves every value as it was
    at::Tensor part = r == me ? mine
                              : at::_sparse_coo_tensor_unsafe(
                                    indicesOf(r).narrow(1, 0, nnz), valuesOf(r).narrow(0, 0, nnz),
                                    mine.sizes(), mine.options(), /*is_coalesced=*/true);
    acc = acc.defined() ? acc.add(part) : part;
  }
  return acc.is_coalesced() ? acc : acc.coalesce();
}

}  // namespace

c10::intrusive_ptr<c10d::Work> ProcessGroupDistx::allreduceSparse(
    const at::Tensor& t, const c10d::AllreduceOptions& opts) {
  const char* op = "all_reduce";
  TORCH_CHECK_VALUE(!t.device().is_cuda(), "distx ", op,
                    ": CUDA tensors are not supported yet; use backend=\"cpu:distx,cuda:nccl\" "
                    "or move the tensor to the CPU");
  TORCH_CHECK_VALUE(t.device().is_cpu(), "distx ", op, ": tensors must be on the CPU, got one on ",
                    t.device());
  const ReduceSpec spec = toReduceOp(opts.reduceOp, t.scalar_type(), op);  // checks the dtype too
  TORCH_CHECK_TYPE(spec.op == ReduceOp::kSum && !spec.preMul, "distx ", op,
                   ": sparse tensors support only ReduceOp.SUM, got ReduceOp.",
                   spec.preMul ? "PREMUL_SUM" : reduceOpName(spec.op));
  TORCH_CHECK_TYPE(!at::isComplexType(t.scalar_type()), "distx ", op, ": sparse tensors of dtype ",
                   t.scalar_type(), " are not supported");
  TORCH_CHECK_VALUE(t.dim() <= kMaxSparseDims, "distx ", op, ": sparse tensors with more than ",
                    kMaxSparseDims, " dimensions are not supported, got ", t.dim());
  return enqueue(c10d::OpType::_ALLREDUCE_SPARSE, "sparse_all_reduce", opts.timeout, {t},
                 [t](CollectiveContext& ctx) {
                   // Internal arithmetic: no autograd recording, and writing
                   // into t works as the dense path's in-place write does.
                   at::AutoDispatchBelowADInplaceOrView guard;
                   at::Tensor sum = sparseSum(ctx, t.coalesce());
                   at::Tensor out = t;
                   out.copy_(sum);
                 });
}

}  // namespace distx
