// Per-element math of the fp8 quantize / dequantize kernels (quantize.cu),
// callable on the host and the device. The kernels evaluate exactly these
// functions; native/cuda/test/quantize_math_test.cu runs them on the CPU
// against the CPU backend's own definitions (core/numerics.h fp8FromFloat /
// bf16FromFloat, cpu/quantize.cpp groupScale / quantizeBlocks /
// dequantizeBlocks), so the GPU results are bit for bit the CPU backend's.
//
// Everything here is integer bit manipulation or a single IEEE-754
// correctly-rounded f32 operation (__fdiv_rn / __fmul_rn on the device, the
// same operation on the host), so host and device agree by construction:
//   - no fast-math, no flush-to-zero (the plug-in is built without
//     -use_fast_math / -ftz=true; __fdiv_rn / __fmul_rn never contract into
//     an FMA);
//   - float -> fp8 is an integer port of fp8FromFloat, not the cvt
//     instruction: it gives the same bits on sm_80 (software path), sm_89/90
//     (where __nv_cvt_float_to_fp8 would use cvt.rn.satfinite) and any GPU
//     the PTX is JIT-compiled for, NaN included (-> 0x7F). The test checks it
//     and __nv_cvt_float_to_fp8's host path against fp8FromFloat over all
//     2^32 floats.
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define MOE_QUANT_HD __host__ __device__ __forceinline__
#else
#define MOE_QUANT_HD inline
#endif

namespace moe_cuda {
namespace quant {

constexpr int kGroup = 128;             // channels per scale group (K direction)
constexpr float kMinAmax = 1e-4f;       // SPEC: amax = max(max|x|, 1e-4)
constexpr float kFp8Max = 448.0f;       // largest finite e4m3
constexpr uint8_t kFp8NaN = 0x7F;

MOE_QUANT_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t b;
  memcpy(&b, &x, sizeof b);
  return b;
#endif
}

MOE_QUANT_HD float float_from_bits(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  memcpy(&x, &b, sizeof x);
  return x;
#endif
}

// IEEE-754 round-to-nearest-even division / multiplication.
MOE_QUANT_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

MOE_QUANT_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

MOE_QUANT_HD bool is_finite(float x) { return (float_bits(x) & 0x7F800000u) != 0x7F800000u; }
MOE_QUANT_HD bool is_nan(float x) { return (float_bits(x) & 0x7FFFFFFFu) > 0x7F800000u; }
MOE_QUANT_HD float abs_f(float x) { return float_from_bits(float_bits(x) & 0x7FFFFFFFu); }

// bf16 -> f32 (exact).
MOE_QUANT_HD float bf16_to_float(uint16_t v) { return float_from_bits(static_cast<uint32_t>(v) << 16); }

// f32 -> bf16, round to nearest even, NaN stays a quiet NaN: numerics.h bf16FromFloat.
MOE_QUANT_HD uint16_t bf16_from_float(float x) {
  const uint32_t bits = float_bits(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  const uint32_t rounding_bias = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding_bias) >> 16);
}

// f32 -> OCP e4m3fn, round to nearest even, saturating (+-inf and finite
// overflow -> +-448), NaN -> 0x7F: numerics.h fp8FromFloat, statement for
// statement (= __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) with
// NaN canonicalized to 0x7F).
MOE_QUANT_HD uint8_t fp8_from_float(float x) {
  const uint32_t bits = float_bits(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return kFp8NaN;
  if (abs > 0x43E80000u) return static_cast<uint8_t>(sign | 0x7E);  // > 464 = 448 + half an ulp
  if (abs <= 0x3A800000u) return sign;                             // <= 2^-10: (signed) zero
  const int exponent = static_cast<int>(abs >> 23) - 127 + 7;       // e4m3 biased exponent
  const uint32_t significand = (abs & 0x7FFFFFu) | 0x800000u;       // 1.m, 24 bits
  const int dropped = exponent >= 1 ? 20 : 20 + (1 - exponent);     // 20..23 (exponent >= -2 here)
  uint32_t result = significand >> dropped;
  if (exponent >= 1) result = (static_cast<uint32_t>(exponent) << 3) | (result & 7u);
  const uint32_t remainder = significand & ((1u << dropped) - 1u);
  const uint32_t half = 1u << (dropped - 1);
  if (remainder > half || (remainder == half && (result & 1u))) ++result;  // may carry into the exponent
  return static_cast<uint8_t>(sign | result);
}

// e4m3fn -> f32 (exact): numerics.h fp8ToFloat (NaN codes give +-0x7FC00000).
MOE_QUANT_HD float fp8_to_float(uint8_t v) {
  const uint32_t exponent = (v >> 3) & 0xFu;
  const uint32_t mantissa = v & 0x7u;
  uint32_t mag;
  if (exponent == 0xF && mantissa == 0x7) {
    mag = 0x7FC00000u;
  } else if (exponent == 0) {
    // m * 2^-9, m in 0..7: exact in f32 (normal for m >= 1)
    mag = float_bits(mul_rn(static_cast<float>(mantissa), 1.0f / 512.0f));
  } else {
    mag = ((exponent + 127 - 7) << 23) | (mantissa << 20);
  }
  return float_from_bits(mag | (static_cast<uint32_t>(v & 0x80) << 24));
}

// 2^r as a float, r in [-149, +inf): ldexp(1.0f, r) (subnormal below -126,
// +inf from 128).
MOE_QUANT_HD float pow2f(int r) {
  if (r >= 128) return float_from_bits(0x7F800000u);
  if (r >= -126) return float_from_bits(static_cast<uint32_t>(r + 127) << 23);
  return float_from_bits(1u << (r + 149));
}

// ue8m0 rounding of a scale: 2^ceil(log2 s), exactly as cpu/quantize.cpp
// groupScale computes it with glibc's frexpf / ldexpf:
//   f = frexp(s, &k)  (s = f * 2^k, |f| in [0.5, 1));  ldexp(1, f == 0.5 ? k - 1 : k)
// including the cases the quantizer never produces: s = +-0, +-inf, NaN
// (glibc stores k = 0: the result is 1.0f) and negative s (f is never +0.5).
MOE_QUANT_HD float ue8m0_ceil(float s) {
  const uint32_t b = float_bits(s);
  const bool negative = (b >> 31) != 0;
  const uint32_t e = (b >> 23) & 0xFFu;
  const uint32_t m = b & 0x7FFFFFu;
  if (e == 0xFFu || (b & 0x7FFFFFFFu) == 0) return 1.0f;
  int k;
  bool half;
  if (e != 0) {  // normal: s = 1.m * 2^(e-127) = (1.m / 2) * 2^(e-126)
    k = static_cast<int>(e) - 126;
    half = m == 0 && !negative;
  } else {  // subnormal: s = m * 2^-149 = (m / 2^(p+1)) * 2^(p+1-149), p = the top bit of m
    int p = 22;
    while (((m >> p) & 1u) == 0) --p;  // m != 0 here
    k = p - 148;
    half = m == (1u << p) && !negative;
  }
  return pow2f(half ? k - 1 : k);
}

// The scale of one group (1x128) or block (128x128) from its amax:
// max(amax, 1e-4) / 448, then 2^ceil(log2 s) for ue8m0. Mirrors groupScale
// (std::max(amax, kMinAmax) = amax < kMinAmax ? kMinAmax : amax).
MOE_QUANT_HD float group_scale(float amax, bool ue8m0) {
  const float a = amax < kMinAmax ? kMinAmax : amax;
  const float s = div_rn(a, kFp8Max);
  return ue8m0 ? ue8m0_ceil(s) : s;
}

// One step of the amax reduction: std::max(amax, fabs(v)), so a NaN v is
// skipped and +inf wins. The values are >= +0 and never NaN, so any order of
// combining partial maxima gives the same result.
MOE_QUANT_HD float amax_step(float amax, float v) {
  const float a = abs_f(v);
  return amax < a ? a : amax;
}

// q = fp8(x / s).
MOE_QUANT_HD uint8_t quantize_value(float x, float s) { return fp8_from_float(div_rn(x, s)); }

// x = decode(q) * s in f32. A NaN product gets the NaN bits the CPU
// backend's x86 multiply produces (the GPU's multiply would return its
// canonical 0x7FFFFFFF instead): a NaN operand propagates quieted (the fp8 NaN
// code first), and an invalid 0 * inf gives x86's default NaN 0xFFC00000.
MOE_QUANT_HD float dequantize_value(uint8_t q, float s) {
  const float d = fp8_to_float(q);
  const float r = mul_rn(d, s);
  if (!is_nan(r)) return r;
  if (is_nan(d)) return d;  // already quiet (0x7FC00000 / 0xFFC00000)
  if (is_nan(s)) return float_from_bits(float_bits(s) | 0x00400000u);
  return float_from_bits(0xFFC00000u);
}

}  // namespace quant
}  // namespace moe_cuda
