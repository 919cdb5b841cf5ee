// Algorithm selection lives here and only here.
#pragma once

#include <cstddef>
#include <string>

#include "algorithms/algorithm.h"

namespace distx {

using AllreduceFn = void (*)(CollectiveContext&, void*, size_t, DType, ReduceOp);
using HierarchicalAllreduceFn = void (*)(CollectiveContext&, void*, size_t, DType, ReduceOp,
                                         const RailAllreduceFn&);

struct AllreduceChoice {
  const char* name;
  AllreduceFn fn;  // always set (hierarchical ones with the default rail stage)
  // Set for the hierarchical algorithms: the same with a caller's inter-node
  // stage (e.g. a compressing one; see RailAllreduceFn).
  HierarchicalAllreduceFn hierarchical = nullptr;

  bool isHierarchical() const { return hierarchical != nullptr; }
  // Runs the choice; `rail` (hierarchical only, empty = default) is the
  // inter-node stage.
  void run(CollectiveContext& ctx, void* data, size_t count, DType dt, ReduceOp op,
           const RailAllreduceFn& rail = {}) const {
    if (hierarchical) {
      hierarchical(ctx, data, count, dt, op, rail);
    } else {
      fn(ctx, data, count, dt, op);
    }
  }
};

// Picks the all-reduce algorithm for `bytes` on a group with topology `topo`.
// `forced` (DISTX_ALGO) overrides the rules; an unknown name is InvalidArgument.
AllreduceChoice selectAllreduce(size_t bytes, const Topology& topo, const std::string& forced);
// InvalidArgument, naming `source` (DISTX_ALGO or pg_options.algo), unless
// `name` is empty or an all-reduce algorithm.
void checkAlgorithmName(const std::string& name, const std::string& source);
// The flat rules only (recursive doubling or ring by size), for worldSize ranks.
AllreduceChoice selectFlatAllreduce(size_t bytes, int worldSize);
// Flat rules with a forced name (kept for callers without a topology).
AllreduceChoice selectAllreduce(size_t bytes, int worldSize, const std::string& forced);

// Largest all-reduce (bytes) that goes to recursive doubling on worldSize ranks.
size_t recursiveDoublingMaxBytes(int worldSize);
// Largest all-reduce (bytes) that goes to reduce->leaders->broadcast rather
// than split-rail on a multi-node topology.
size_t leadersMaxBytes();

using BroadcastFn = void (*)(CollectiveContext&, void*, size_t, int);
struct BroadcastChoice {
  const char* name;
  BroadcastFn fn;
};
// Hierarchical broadcast on multi-node topologies, the flat binomial tree
// otherwise or when `forced` names a flat algorithm.
BroadcastChoice selectBroadcast(size_t bytes, const Topology& topo, const std::string& forced);

// One line for the log at group creation: what the topology makes selection do.
std::string describeSelection(const Topology& topo, const std::string& forced);

}  // namespace distx
