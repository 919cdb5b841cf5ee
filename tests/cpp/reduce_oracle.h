// Closed-form, rank-dependent inputs for reducing collectives, and the exact
// result of reducing them over P <= 8 ranks, for every (dtype, op) pair that
// reduceInto() supports. Values stay small enough that every partial result is
// exact in every dtype (int8 and bfloat16 included), so tests compare exactly;
// only AVG on floating types (one rounded division) needs a tolerance.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "values.h"

namespace distx::testing {

struct ReduceCase {
  DType dt;
  ReduceOp op;
  std::string name() const { return std::string(dtypeName(dt)) + "/" + reduceOpName(op); }
};

inline std::vector<ReduceCase> supportedReduceCases() {
  const DType dts[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16,   DType::kBFloat16,
                       DType::kInt8,    DType::kUInt8,   DType::kInt16,     DType::kInt32,
                       DType::kInt64,   DType::kBool,    DType::kComplex64, DType::kComplex128};
  const ReduceOp ops[] = {ReduceOp::kSum, ReduceOp::kAvg,  ReduceOp::kProduct, ReduceOp::kMin,
                          ReduceOp::kMax, ReduceOp::kBAnd, ReduceOp::kBOr,     ReduceOp::kBXor};
  std::vector<ReduceCase> out;
  for (DType dt : dts) {
    for (ReduceOp op : ops) {
      if (reduceSupported(dt, op) && !(dt == DType::kBool && op == ReduceOp::kAvg)) {
        out.push_back({dt, op});
      }
    }
  }
  return out;
}

inline bool isBitwise(ReduceOp op) {
  return op == ReduceOp::kBAnd || op == ReduceOp::kBOr || op == ReduceOp::kBXor;
}

// Rank r's element i.
inline double oracleInput(DType dt, ReduceOp op, int r, size_t i) {
  if (dt == DType::kBool) return (r + i) % 3 == 0 ? 1 : 0;
  if (isBitwise(op)) return static_cast<double>((r * 37 + i * 11) % 64);
  const bool nonNeg = dt == DType::kUInt8;
  switch (op) {
    case ReduceOp::kProduct:
      return (r + i) % 4 == 0 ? 2 : ((r + i) % 3 == 0 && !nonNeg ? -1 : 1);
    case ReduceOp::kMin:
    case ReduceOp::kMax:
      return static_cast<double>((r * 3 + i) % 11) - (nonNeg ? 0 : 5);
    default:
      return (r + 1) * static_cast<double>(i % 3 + 1);  // sum <= 36 * 3
  }
}

// The reduction over ranks 0..P-1 of element i, rounded through dt.
inline double oracleExpected(DType dt, ReduceOp op, int P, size_t i) {
  if (dt == DType::kBool) {
    bool any = false, all = true, parity = false;
    for (int r = 0; r < P; ++r) {
      const bool b = oracleInput(dt, op, r, i) != 0;
      any |= b;
      all &= b;
      parity ^= b;
    }
    switch (op) {
      case ReduceOp::kProduct:
      case ReduceOp::kMin:
      case ReduceOp::kBAnd:
        return all;
      case ReduceOp::kBXor:
        return parity;
      default:
        return any;
    }
  }
  if (isBitwise(op)) {
    int64_t acc = static_cast<int64_t>(oracleInput(dt, op, 0, i));
    for (int r = 1; r < P; ++r) {
      const auto x = static_cast<int64_t>(oracleInput(dt, op, r, i));
      acc = op == ReduceOp::kBAnd ? (acc & x) : op == ReduceOp::kBOr ? (acc | x) : (acc ^ x);
    }
    return static_cast<double>(acc);
  }
  double acc = oracleInput(dt, op, 0, i);
  for (int r = 1; r < P; ++r) {
    const double x = oracleInput(dt, op, r, i);
    switch (op) {
      case ReduceOp::kProduct:
        acc *= x;
        break;
      case ReduceOp::kMin:
        acc = std::min(acc, x);
        break;
      case ReduceOp::kMax:
        acc = std::max(acc, x);
        break;
      default:
        acc += x;
        break;
    }
  }
  if (op == ReduceOp::kAvg)
    acc = isFloating(dt) || dt == DType::kComplex64 || dt == DType::kComplex128
              ? acc / P
              : std::trunc(acc / P);
  return roundTrip(dt, acc);
}

// Allowed |got - want| / |want|: zero except for floating AVG.
inline double oracleTolerance(DType dt, ReduceOp op) {
  if (op != ReduceOp::kAvg) return 0.0;
  switch (dt) {
    case DType::kFloat16:
      return 1.0 / 1024;
    case DType::kBFloat16:
      return 1.0 / 128;
    case DType::kFloat32:
    case DType::kComplex64:
      return 1e-6;
    case DType::kFloat64:
    case DType::kComplex128:
      return 1e-14;
    default:
      return 0.0;
  }
}

// A buffer of `count` elements holding rank r's input from index `first` on.
inline std::vector<uint8_t> oracleBuffer(DType dt, ReduceOp op, int r, size_t count,
                                         size_t first = 0) {
  std::vector<uint8_t> buf(count * dtypeSize(dt) + 1);  // +1: never a null data()
  for (size_t i = 0; i < count; ++i)
    put(dt, buf.data(), i, oracleInput(dt, op, r, first + i));
  return buf;
}

using RankBuffers = std::vector<std::vector<uint8_t>>;

// Every rank's oracleBuffer of `count` elements, ranks 0 .. P-1.
inline RankBuffers oracleBuffers(const ReduceCase& c, int P, size_t count) {
  RankBuffers bufs;
  for (int r = 0; r < P; ++r)
    bufs.push_back(oracleBuffer(c.dt, c.op, r, count));
  return bufs;
}

// Asserts that elements [first, first + count) of rank r's buffer hold the
// reduction over P ranks (oracleExpected, within oracleTolerance).
inline void expectReduced(const ReduceCase& c, int P, int r, const std::vector<uint8_t>& buf,
                          size_t first, size_t count) {
  const double tol = oracleTolerance(c.dt, c.op);
  for (size_t i = first; i < first + count; ++i) {
    const double want = oracleExpected(c.dt, c.op, P, i), got = get(c.dt, buf.data(), i);
    ASSERT_NEAR(got, want, tol * std::abs(want))
        << "P=" << P << " count=" << count << " " << c.name() << " rank " << r << " index " << i;
  }
}

// The all-reduce's result: every rank holds the reduction of its first
// `count` elements, in the same bytes as rank 0 (complex: imaginary parts too).
// Wrap in ASSERT_NO_FATAL_FAILURE to stop the caller at the first mismatch.
inline void expectAllreduced(const ReduceCase& c, const RankBuffers& bufs, size_t count) {
  const int P = static_cast<int>(bufs.size());
  for (int r = 0; r < P; ++r) {
    ASSERT_NO_FATAL_FAILURE(expectReduced(c, P, r, bufs[r], 0, count));
    ASSERT_EQ(0, std::memcmp(bufs[r].data(), bufs[0].data(), count * dtypeSize(c.dt)))
        << "ranks 0 and " << r << " differ, P=" << P << " " << c.name();
  }
}

}  // namespace distx::testing
