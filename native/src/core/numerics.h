// Scalar number formats of SPEC.md: OCP fp8 E4M3FN and bf16.
//
// fp8FromFloat is bit for bit CUDA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE,
// __NV_E4M3): round to nearest even, finite overflow and +-inf saturate to
// +-448, and every NaN becomes 0x7F (CUDA first canonicalizes NaN to a
// positive quiet NaN, so the sign is dropped).
#pragma once

#include <cstdint>
#include <cstring>

namespace moe {

inline uint32_t floatBits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

inline float floatFromBits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

constexpr float kFp8E4M3Max = 448.0f;
constexpr uint8_t kFp8E4M3NaN = 0x7F;

inline uint8_t fp8FromFloat(float x) {
  const uint32_t bits = floatBits(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return kFp8E4M3NaN;
  // 464 = 448 + half an ulp: above it even round-to-nearest leaves the format.
  if (abs > 0x43E80000u) return sign | 0x7E;
  // 2^-10 = half the smallest subnormal: at or below it rounds to (signed) zero.
  if (abs <= 0x3A800000u) return sign;
  const int exponent = static_cast<int>(abs >> 23) - 127 + 7;  // e4m3 biased exponent
  const uint32_t significand = (abs & 0x7FFFFFu) | 0x800000u;  // 1.m, 24 bits
  // Normal results keep 4 significant bits (drop 20); subnormal ones fewer.
  const int dropped = exponent >= 1 ? 20 : 20 + (1 - exponent);
  uint32_t result = significand >> dropped;
  if (exponent >= 1) result = (static_cast<uint32_t>(exponent) << 3) | (result & 7u);
  const uint32_t remainder = significand & ((1u << dropped) - 1u);
  const uint32_t half = 1u << (dropped - 1);
  if (remainder > half || (remainder == half && (result & 1u))) ++result;  // carries into the exponent
  return static_cast<uint8_t>(sign | result);
}

inline float fp8ToFloat(uint8_t v) {
  const uint32_t exponent = (v >> 3) & 0xFu;
  const uint32_t mantissa = v & 0x7u;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = floatFromBits(0x7FC00000u);
  } else if (exponent == 0) {
    magnitude = static_cast<float>(mantissa) * (1.0f / 512.0f);  // m * 2^-9
  } else {
    magnitude = floatFromBits(((exponent + 127 - 7) << 23) | (mantissa << 20));
  }
  return (v & 0x80) ? -magnitude : magnitude;
}

inline bool fp8IsNaN(uint8_t v) { return (v & 0x7F) == 0x7F; }

inline uint16_t bf16FromFloat(float x) {
  const uint32_t bits = floatBits(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  const uint32_t roundingBias = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + roundingBias) >> 16);
}

inline float bf16ToFloat(uint16_t v) { return floatFromBits(static_cast<uint32_t>(v) << 16); }

// A table of all 256 fp8 values, for decoding in scalar loops.
struct Fp8DecodeTable {
  float value[256];
  Fp8DecodeTable() {
    for (int i = 0; i < 256; ++i) value[i] = fp8ToFloat(static_cast<uint8_t>(i));
  }
};
const Fp8DecodeTable& fp8DecodeTable();

}  // namespace moe
