#include "backend/consistency_check.hpp"

#include <cstring>
#include <sstream>

#include "common/error.h"

namespace distx {
namespace {

// Ops whose per-rank outputs legitimately differ: compare the op only.
bool shapesMayDiffer(c10d::OpType t) {
  switch (t) {
    case c10d::OpType::GATHER:
    case c10d::OpType::SCATTER:
    case c10d::OpType::ALLTOALL:
    case c10d::OpType::ALLTOALL_BASE:
    case c10d::OpType::BARRIER:
      return true;
    default:
      return false;
  }
}

std::string describe(const OpSignature& s) {
  std::ostringstream os;
  os << s.op;
  if (s.numel >= 0)
    os << " dtype=" << c10::toString(static_cast<at::ScalarType>(s.dtype)) << " numel=" << s.numel
       << " shapes=" << s.shapes;
  return os.str();
}

}  // namespace

OpSignature makeSignature(c10d::OpType type, const char* opName,
                          const std::vector<at::Tensor>& outputs) {
  OpSignature s;
  s.opType = static_cast<int32_t>(type);
  std::strncpy(s.op, opName, sizeof s.op - 1);
  if (shapesMayDiffer(type) || outputs.empty()) return s;
  s.dtype = static_cast<int32_t>(outputs[0].scalar_type());
  s.numel = 0;
  std::ostringstream shapes;
  for (const auto& t : outputs) {
    s.numel += t.numel();
    shapes << t.sizes();
  }
  std::strncpy(s.shapes, shapes.str().c_str(), sizeof s.shapes - 1);
  return s;
}

void checkConsistency(CollectiveContext& ctx, const OpSignature& mine) {
  const int P = ctx.size();
  if (P == 1) return;
  CollectiveContext control = ctx;
  control.kind = tag::Kind::kControl;
  std::vector<OpSignature> all(P);
  all[ctx.rank()] = mine;
  std::vector<void*> blocks;
  for (auto& s : all)
    blocks.push_back(&s);
  allgatherRing(control, blocks, sizeof(OpSignature));
  bool same = true;
  for (const auto& s : all) {
    same = same && s.opType == all[0].opType && s.dtype == all[0].dtype &&
           s.numel == all[0].numel && std::strncmp(s.shapes, all[0].shapes, sizeof s.shapes) == 0;
  }
  if (same) return;
  std::ostringstream os;
  os << "DISTX_DEBUG: ranks called different collectives at this sequence number:";
  for (int r = 0; r < P; ++r)
    os << "\n  rank " << r << ": " << describe(all[r]);
  throw InvalidArgument(os.str());
}

}  // namespace distx
