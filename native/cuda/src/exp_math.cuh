// 1 + e^x in f32, callable on the host and the device: a statement-for-
// statement port of the CPU backend's qrow::onePlusExp (cpu/one_plus_exp.h,
// constants from cpu/quantize_row_kernels.h, namespace qexp). Every multiply-
// add is an explicit fmaf and every other operation a single correctly
// rounded __fmul_rn / __fadd_rn, so nvcc cannot contract or reorder anything
// and the device returns the CPU's bits (checked on the host by
// test/moe_math_test.cu against the CPU's function over many inputs).
// Used by sigmoid routing (1 / (1 + e^-logit)), SwiGLU (g / (1 + e^-g)) and
// softmax routing (e^(logit - max)).
#pragma once

#include <math.h>
#include <stdint.h>

#include "quantize_math.cuh"

namespace moe_cuda {
namespace expm {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.428606765330187045e-06f;
constexpr float kMaxX = 88.72283935546875f;      // above: 1 + e^x = +inf
constexpr float kMinX = -103.972084045410156f;   // below: exactly 1
constexpr float kP0 = 1.9875691500e-4f;
constexpr float kP1 = 1.3981999507e-3f;
constexpr float kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f;
constexpr float kP4 = 1.6666665459e-1f;
constexpr float kP5 = 5.0000001201e-1f;

MOE_QUANT_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return fmaf(a, b, c);
#endif
}

MOE_QUANT_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

MOE_QUANT_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// The reduced exponential both functions below share: e^x = p * s1 * s2 with
// p = e^r in [~0.7, ~1.4] and s1 * s2 = 2^n as two normal powers of two (so
// that n up to 128, and down to the subnormals, stays representable). The
// CPU's expReducedScalar, operation for operation. Returned by value: an
// out-pointer would put s1 and s2 in local memory where nvcc does not inline.
struct ExpReduced {
  float p, s1, s2;
};

MOE_QUANT_HD ExpReduced exp_reduced(float x) {
  using quant::float_bits;
  using quant::float_from_bits;
  using quant::mul_rn;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: rounds x * log2(e) to an integer
  const float k = fma_rn(x, kLog2e, kMagic);
  const float n = sub_rn(k, kMagic);
  const int32_t ni = static_cast<int32_t>(float_bits(k) - float_bits(kMagic));
  float r = fma_rn(n, -kLn2Hi, x);
  r = fma_rn(n, -kLn2Lo, r);
  float p = kP0;
  p = fma_rn(p, r, kP1);
  p = fma_rn(p, r, kP2);
  p = fma_rn(p, r, kP3);
  p = fma_rn(p, r, kP4);
  p = fma_rn(p, r, kP5);
  const float r2 = mul_rn(r, r);
  p = fma_rn(p, r2, r);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  return ExpReduced{add_rn(p, 1.0f), float_from_bits(static_cast<uint32_t>(n1 + 127) << 23),
                    float_from_bits(static_cast<uint32_t>(n2 + 127) << 23)};
}

// 1 + e^x; x > kMaxX gives +inf, x < kMinX gives 1, NaN stays NaN.
MOE_QUANT_HD float one_plus_exp(float x) {
  if (x > kMaxX) return quant::float_from_bits(0x7F800000u);
  if (x < kMinX) return 1.0f;
  const ExpReduced e = exp_reduced(x);
  return fma_rn(quant::mul_rn(e.p, e.s1), e.s2, 1.0f);
}

// e^x for x <= 0 (softmax: x = logit - max logit); x < kMinX (and -inf, NaN)
// gives +0; a subnormal result rounds once. The CPU's expNonPositive.
MOE_QUANT_HD float exp_non_positive(float x) {
  if (!(x >= kMinX)) return 0.0f;
  const ExpReduced e = exp_reduced(x);
  return quant::mul_rn(quant::mul_rn(e.p, e.s1), e.s2);
}

}  // namespace expm
}  // namespace moe_cuda
