#include "common/dtype.h"

#include <iterator>

#include "common/enum_table.h"

namespace distx {
namespace {

// Rows in the order of dtype.h (common/enum_table.h).
struct DTypeRow {
  const char* name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {"float32", 4}, {"float64", 8}, {"float16", 2},   {"bfloat16", 2},
    {"int8", 1},    {"uint8", 1},   {"int16", 2},     {"int32", 4},
    {"int64", 8},   {"bool", 1},    {"complex64", 8}, {"complex128", 16},
};
static_assert(std::size(kDTypes) == static_cast<size_t>(DType::kComplex128) + 1,
              "one row per DType");

constexpr const char* kReduceOpNames[] = {"SUM", "AVG",  "PRODUCT", "MIN",
                                          "MAX", "BAND", "BOR",     "BXOR"};
static_assert(std::size(kReduceOpNames) == static_cast<size_t>(ReduceOp::kBXor) + 1,
              "one name per ReduceOp");

}  // namespace

size_t dtypeSize(DType dt) {
  return enumLookup(kDTypes, dt, DTypeRow{"?", 0}).size;
}

const char* dtypeName(DType dt) {
  return enumLookup(kDTypes, dt, DTypeRow{"?", 0}).name;
}

const char* reduceOpName(ReduceOp op) {
  return enumLookup(kReduceOpNames, op, "?");
}

bool isFloating(DType dt) {
  return dt == DType::kFloat32 || dt == DType::kFloat64 || dt == DType::kFloat16 ||
         dt == DType::kBFloat16;
}

}  // namespace distx
