// Reading and writing any DType element as a double, for closed-form test inputs.
#pragma once

#include <complex>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "common/enum_table.h"
#include "common/half.h"

namespace distx::testing {
namespace element {

// How each DType stores a double: its element type and the conversions both
// ways (complex: the real part; the imaginary part is written as 0).
template <class T>
struct Plain {
  using Elem = T;
  static T from(double v) { return static_cast<T>(v); }
  static double to(T x) { return static_cast<double>(x); }
};
struct Half {
  using Elem = uint16_t;
  static uint16_t from(double v) { return floatToHalf(static_cast<float>(v)); }
  static double to(uint16_t x) { return halfToFloat(x); }
};
struct BFloat16 {
  using Elem = uint16_t;
  static uint16_t from(double v) { return floatToBf16(static_cast<float>(v)); }
  static double to(uint16_t x) { return bf16ToFloat(x); }
};
struct Bool {
  using Elem = uint8_t;
  static uint8_t from(double v) { return v != 0; }
  static double to(uint8_t x) { return x; }
};
template <class T>
struct Complex {
  using Elem = std::complex<T>;
  static Elem from(double v) { return {static_cast<T>(v), T(0)}; }
  static double to(Elem x) { return x.real(); }
};

// put/get of one format, through the element type.
struct Access {
  void (*put)(void* p, size_t i, double v);
  double (*get)(const void* p, size_t i);
};
template <class F>
constexpr Access accessOf() {
  return {
      [](void* p, size_t i, double v) { static_cast<typename F::Elem*>(p)[i] = F::from(v); },
      [](const void* p, size_t i) { return F::to(static_cast<const typename F::Elem*>(p)[i]); }};
}

// Indexed by DType, in the order of common/dtype.h.
inline constexpr Access kByDType[] = {
    accessOf<Plain<float>>(),   accessOf<Plain<double>>(),  accessOf<Half>(),
    accessOf<BFloat16>(),       accessOf<Plain<int8_t>>(),  accessOf<Plain<uint8_t>>(),
    accessOf<Plain<int16_t>>(), accessOf<Plain<int32_t>>(), accessOf<Plain<int64_t>>(),
    accessOf<Bool>(),           accessOf<Complex<float>>(), accessOf<Complex<double>>()};
static_assert(std::size(kByDType) == static_cast<size_t>(DType::kComplex128) + 1,
              "one entry per DType");
// What a value outside DType reads and writes: nothing, and 0.
inline constexpr Access kNone = {[](void*, size_t, double) {},
                                 [](const void*, size_t) { return 0.0; }};

}  // namespace element

inline void put(DType dt, void* p, size_t i, double v) {
  enumLookup(element::kByDType, dt, element::kNone).put(p, i, v);
}

inline double get(DType dt, const void* p, size_t i) {
  return enumLookup(element::kByDType, dt, element::kNone).get(p, i);
}

// Rounds v through dtype dt (what storing it would give).
inline double roundTrip(DType dt, double v) {
  uint8_t buf[16];
  put(dt, buf, 0, v);
  return get(dt, buf, 0);
}

// Rank r's seeded normal float32 input of n elements (spread 1 + r): the
// compressed all-reduce tests' gradients.
inline std::vector<float> gaussianInput(int r, size_t n, uint32_t seed = 1) {
  std::mt19937 gen(seed * 7919 + r);
  std::normal_distribution<float> dist(0.0f, 1.0f + r);
  std::vector<float> v(n);
  for (auto& x : v)
    x = dist(gen);
  return v;
}

}  // namespace distx::testing
