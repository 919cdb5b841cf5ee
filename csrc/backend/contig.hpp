// Contiguous staging for the collectives: algorithms work on flat, dense
// buffers; users hand in views with any strides.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace distx {

// A contiguous tensor to work on: `user` itself, or a copy written back later.
struct Contig {
  at::Tensor user;
  at::Tensor buf;
  explicit Contig(const at::Tensor& t) : user(t), buf(t.is_contiguous() ? t : t.contiguous()) {}
  void writeBack() {
    if (!buf.is_same(user)) user.copy_(buf);
  }
};

// Contig for each tensor of a list, with the staging buffers' data pointers
// (the per-rank blocks the algorithms take).
struct ContigList {
  std::vector<Contig> items;
  std::vector<void*> blocks;
  explicit ContigList(const std::vector<at::Tensor>& ts) {
    items.reserve(ts.size());
    for (const auto& t : ts) {
      items.emplace_back(t);
      blocks.push_back(items.back().buf.data_ptr());
    }
  }
  void writeBack() {
    for (auto& c : items)
      c.writeBack();
  }
};

// A fresh contiguous copy of `t` (the algorithm may overwrite it freely).
inline at::Tensor contiguousCopy(const at::Tensor& t) {
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(at::MemoryFormat::Contiguous));
  out.copy_(t);
  return out;
}

// `t`'s elements as a flat contiguous 1-D tensor (a view when t is contiguous).
inline at::Tensor flatContiguous(const at::Tensor& t) {
  return t.contiguous().view({-1});
}

}  // namespace distx
