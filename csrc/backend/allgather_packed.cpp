#include "backend/allgather_packed.hpp"

#include "backend/contig.hpp"

namespace distx {

PackedBlocks allgatherPacked(CollectiveContext& ctx, const std::vector<at::Tensor>& inputs) {
  PackedBlocks p;
  for (const auto& t : inputs)
    p.block += static_cast<int64_t>(t.nbytes());
  const int P = ctx.size();
  p.buf = parked(at::empty({p.block * P}, at::kByte));
  int64_t pos = 0;
  for (const auto& t : inputs) {
    const int64_t n = t.nbytes();
    if (n) p.bytes(ctx.rank(), pos, n).copy_(flatContiguous(t).view(at::kByte));
    pos += n;
  }
  std::vector<void*> blocks;
  for (int r = 0; r < P; ++r)
    blocks.push_back(static_cast<uint8_t*>(p.buf.data_ptr()) + r * p.block);
  allgatherRing(ctx, blocks, static_cast<size_t>(p.block));
  return p;
}

void copyBytesInto(const at::Tensor& dst, const at::Tensor& bytes) {
  if (bytes.numel() == 0) return;
  Contig c(dst);
  c.buf.view({-1}).view(at::kByte).copy_(bytes);
  c.writeBack();
}

}  // namespace distx
