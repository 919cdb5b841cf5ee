// Contiguous staging for the collectives: algorithms work on flat, dense
// buffers; users hand in views with any strides.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace distx {

// Note [Parked buffers]
// A collective that fails (timeout, dead peer) may leave UCX requests in
// flight: a send a slow peer has not matched yet, a rendezvous receive already
// under way. UCX can still read or write their buffers after the job's
// exception has unwound, so those buffers must not be freed or reused. The
// worker thread runs each job with a JobArena installed; the staging helpers
// below (and every buffer a job hands the transport) register their tensors
// in it, and the job's closure holds the user's tensors. When a job fails
// while the transport still has abandoned requests, the backend parks the
// arena, the closure and the group scratch until the transport reports them
// drained (ProcessGroupDistx::run); a group destroyed before that leaks them
// on purpose.
class JobArena {
 public:
  // The arena of the job running on this thread, or null.
  static JobArena*& current() {
    static thread_local JobArena* arena = nullptr;
    return arena;
  }
  void keep(const at::Tensor& t) { tensors_.push_back(t); }
  // Installs `arena` for the current scope.
  struct Scope {
    explicit Scope(JobArena& arena) : prev(current()) { current() = &arena; }
    ~Scope() { current() = prev; }
    JobArena* prev;
  };

 private:
  std::vector<at::Tensor> tensors_;
};

// Registers `t` with the running job's arena (if any) and returns it.
inline at::Tensor parked(at::Tensor t) {
  if (JobArena* arena = JobArena::current()) arena->keep(t);
  return t;
}

// A contiguous tensor to work on: `user` itself, or a copy written back later.
struct Contig {
  at::Tensor user;
  at::Tensor buf;
  explicit Contig(const at::Tensor& t)
      : user(t), buf(parked(t.is_contiguous() ? t : t.contiguous())) {}
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
  return parked(out);
}

// `t`'s elements as a flat contiguous 1-D tensor (a view when t is contiguous).
inline at::Tensor flatContiguous(const at::Tensor& t) {
  return parked(t.contiguous().view({-1}));
}

// The elements of every tensor of `ts` (one dtype), one after the other in a
// fresh 1-D tensor: the coalesced forms run one collective over it.
inline at::Tensor concatFlat(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> flat;
  for (const auto& t : ts)
    flat.push_back(t.reshape({-1}));
  return parked(at::cat(flat));
}

// concatFlat() backwards: copies `flat`'s consecutive pieces into `ts`.
inline void splitInto(const at::Tensor& flat, const std::vector<at::Tensor>& ts) {
  int64_t off = 0;
  for (const auto& t : ts) {
    t.copy_(flat.narrow(0, off, t.numel()).view(t.sizes()));
    off += t.numel();
  }
}

}  // namespace distx
