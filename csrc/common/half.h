// IEEE half and bfloat16 <-> float conversions, torch-free, round-to-nearest-even.
#pragma once

#include <cstdint>
#include <cstring>

namespace distx {

inline float bitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t floatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float halfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return bitsToFloat(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bitsToFloat(sign);
    // subnormal: value = mant * 2^-24
    float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t floatToHalf(float f) {
  uint32_t u = floatToBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  u &= 0x7fffffffu;
  if (u >= 0x7f800000u) return sign | (u > 0x7f800000u ? 0x7e00 : 0x7c00);  // nan / inf
  if (u >= 0x477ff000u) return sign | 0x7c00;                               // overflow -> inf
  if (u < 0x38800000u) {                                                    // subnormal or zero
    // add 0.5 (as float) so the FPU rounds the mantissa to nearest even for us
    float v = bitsToFloat(u) + 0.5f;
    return sign | static_cast<uint16_t>(floatToBits(v) - 0x3f000000u);
  }
  const uint32_t mantOdd = (u >> 13) & 1;
  u += 0xc8000fffu + mantOdd;  // rebias exponent (-112 << 23) and round to nearest even
  return sign | static_cast<uint16_t>(u >> 13);
}

inline float bf16ToFloat(uint16_t b) {
  return bitsToFloat(static_cast<uint32_t>(b) << 16);
}

inline uint16_t floatToBf16(float f) {
  uint32_t u = floatToBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet nan
  u += 0x7fffu + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace distx
