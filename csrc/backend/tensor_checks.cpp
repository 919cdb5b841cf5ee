#include "backend/tensor_checks.hpp"

#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <utility>

namespace distx {

namespace {

// Every dtype distx moves, with torch's name for it: the one table both
// directions read.
constexpr std::pair<at::ScalarType, DType> kDTypes[] = {
    {at::kFloat, DType::kFloat32},
    {at::kDouble, DType::kFloat64},
    {at::kHalf, DType::kFloat16},
    {at::kBFloat16, DType::kBFloat16},
    {at::kChar, DType::kInt8},
    {at::kByte, DType::kUInt8},
    {at::kShort, DType::kInt16},
    {at::kInt, DType::kInt32},
    {at::kLong, DType::kInt64},
    {at::kBool, DType::kBool},
    {at::kComplexFloat, DType::kComplex64},
    {at::kComplexDouble, DType::kComplex128},
};

}  // namespace

DType toDType(at::ScalarType st, const char* op) {
  for (const auto& [scalar, dt] : kDTypes) {
    if (scalar == st) return dt;
  }
  TORCH_CHECK_TYPE(false, "distx ", op, ": unsupported dtype ", st);
}

at::ScalarType toScalarType(DType dt) {
  for (const auto& [scalar, d] : kDTypes) {
    if (d == dt) return scalar;
  }
  TORCH_CHECK_TYPE(false, "distx: no torch dtype for ", dtypeName(dt));
}

void checkTensor(const at::Tensor& t, const char* op) {
  TORCH_CHECK_VALUE(t.defined(), "distx ", op, ": got an undefined tensor");
  TORCH_CHECK_VALUE(t.device().is_cpu() || t.device().is_cuda(), "distx ", op,
                    ": tensors must be on the CPU or CUDA, got one on ", t.device());
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, "distx ", op,
                    ": only dense (strided) tensors are supported, got ", t.layout());
  toDType(t.scalar_type(), op);
  TORCH_CHECK_VALUE(
      at::has_internal_overlap(t) != at::MemOverlap::Yes, "distx ", op,
      ": the tensor has elements that share memory (e.g. made by expand()); pass a .clone()");
}

const at::Tensor& singleTensor(const std::vector<at::Tensor>& tensors, const char* op) {
  TORCH_CHECK_VALUE(tensors.size() == 1, "distx ", op,
                    ": expected exactly one tensor per call, got ", tensors.size());
  checkTensor(tensors[0], op);
  return tensors[0];
}

void checkSameTypeAndSize(const std::vector<at::Tensor>& ts, const at::Tensor& ref,
                          const char* op) {
  for (size_t i = 0; i < ts.size(); ++i) {
    checkTensor(ts[i], op);
    TORCH_CHECK_TYPE(ts[i].scalar_type() == ref.scalar_type(), "distx ", op, ": tensor ", i,
                     " has dtype ", ts[i].scalar_type(), " but the input has ", ref.scalar_type());
    TORCH_CHECK_VALUE(ts[i].numel() == ref.numel(), "distx ", op, ": tensor ", i, " has ",
                      ts[i].numel(), " elements but the input has ", ref.numel());
  }
}

ReduceSpec toReduceOp(const c10d::ReduceOp& op, at::ScalarType dtype, const char* opName) {
  ReduceSpec spec;
  switch (op.op_) {
    case c10d::ReduceOp::SUM:
      spec.op = ReduceOp::kSum;
      break;
    case c10d::ReduceOp::AVG:
      spec.op = ReduceOp::kAvg;
      break;
    case c10d::ReduceOp::PRODUCT:
      spec.op = ReduceOp::kProduct;
      break;
    case c10d::ReduceOp::MIN:
      spec.op = ReduceOp::kMin;
      break;
    case c10d::ReduceOp::MAX:
      spec.op = ReduceOp::kMax;
      break;
    case c10d::ReduceOp::BAND:
      spec.op = ReduceOp::kBAnd;
      break;
    case c10d::ReduceOp::BOR:
      spec.op = ReduceOp::kBOr;
      break;
    case c10d::ReduceOp::BXOR:
      spec.op = ReduceOp::kBXor;
      break;
    case c10d::ReduceOp::PREMUL_SUM: {
      TORCH_CHECK_TYPE(at::isFloatingType(dtype) || at::isComplexType(dtype), "distx ", opName,
                       ": PREMUL_SUM needs a floating or complex dtype, got ", dtype);
      auto* sup = dynamic_cast<c10d::PreMulSumSupplement*>(op.supplement_.get());
      TORCH_CHECK_VALUE(sup != nullptr, "distx ", opName, ": PREMUL_SUM without a factor");
      spec.op = ReduceOp::kSum;
      spec.preMul = true;
      spec.factor =
          sup->tensor_factor.defined() ? sup->tensor_factor.item<double>() : sup->double_factor;
      return spec;
    }
    default:
      TORCH_CHECK_VALUE(false, "distx ", opName, ": unknown reduce op ", static_cast<int>(op.op_));
  }
  const DType dt = toDType(dtype, opName);
  TORCH_CHECK_TYPE(reduceSupported(dt, spec.op), "distx ", opName, ": ReduceOp.",
                   reduceOpName(spec.op), " is not defined for dtype ", dtype);
  return spec;
}

}  // namespace distx
