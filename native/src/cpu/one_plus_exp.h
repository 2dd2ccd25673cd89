// 1 + e^x in f32, the exp shared by SwiGLU (silu(g) = g / (1 + e^-g)) and
// sigmoid routing (1 / (1 + e^-logit)): the qexp sequence described in
// quantize_row_kernels.h, written once per ISA with explicit FMAs so that
// every ISA gives the same bits. x > kMaxX gives +inf, x < kMinX gives 1,
// NaN stays NaN.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "core/numerics.h"
#include "cpu/quantize_row_kernels.h"

namespace moe::cpu::qrow {

// The reduced exponential, scalar: returns p(r) ~ e^r for r = x - n ln 2,
// n = round(x log2 e), and 2^n as two normal halves *s1 * *s2 (n = n1 + n2),
// so that callers scale in two exact steps. The sequence of expReducedAvx512
// below, so that every ISA gives the same bits.
inline float expReducedScalar(float x, float* s1, float* s2) {
  using namespace qexp;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float k = std::fma(x, kLog2e, kMagic);
  const float n = k - kMagic;
  const int32_t ni = static_cast<int32_t>(floatBits(k) - floatBits(kMagic));
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = kP0;
  p = std::fma(p, r, kP1);
  p = std::fma(p, r, kP2);
  p = std::fma(p, r, kP3);
  p = std::fma(p, r, kP4);
  p = std::fma(p, r, kP5);
  const float r2 = r * r;
  p = std::fma(p, r2, r);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  *s1 = floatFromBits(static_cast<uint32_t>(n1 + 127) << 23);
  *s2 = floatFromBits(static_cast<uint32_t>(n2 + 127) << 23);
  return p + 1.0f;
}

inline float onePlusExp(float x) {
  using namespace qexp;
  if (x > kMaxX) return std::numeric_limits<float>::infinity();
  if (x < kMinX) return 1.0f;
  float s1, s2;
  const float p = expReducedScalar(x, &s1, &s2);
  return std::fma(p * s1, s2, 1.0f);
}

// The reduced exponential shared by onePlusExp* and SwiGLU's fast path: with
// k = x log2(e) + 1.5 * 2^23 (so n = k - 1.5 * 2^23 = round(x log2 e), also
// the low bits of k) and r = x - n ln 2 in two steps, returns p(r) ~ e^r; the
// caller scales by 2^n. One operation sequence, so every caller's bits agree.
__attribute__((target("avx512f"))) inline __m512 expReducedAvx512(__m512 x, __m512* k) {
  using namespace qexp;
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  *k = _mm512_fmadd_ps(x, _mm512_set1_ps(kLog2e), magic);
  const __m512 n = _mm512_sub_ps(*k, magic);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Hi), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP5));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, r);
  return _mm512_add_ps(p, _mm512_set1_ps(1.0f));
}

// 2^n as two normal halves *s1 * *s2 (n = n1 + n2, n1 = n >> 1) from the k
// of expReduced* (n is k's low bits): the scalar expReducedScalar's split.
__attribute__((target("avx512f"))) inline void pow2HalvesAvx512(__m512 k, __m512* s1, __m512* s2) {
  const __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(k), _mm512_castps_si512(_mm512_set1_ps(12582912.0f)));
  const __m512i n1 = _mm512_srai_epi32(ni, 1);
  const __m512i n2 = _mm512_sub_epi32(ni, n1);
  *s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
  *s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
}

__attribute__((target("avx2"))) inline void pow2HalvesAvx2(__m256 k, __m256* s1, __m256* s2) {
  const __m256i ni = _mm256_sub_epi32(_mm256_castps_si256(k), _mm256_castps_si256(_mm256_set1_ps(12582912.0f)));
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  *s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
  *s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
}

// The full sequence, for any x (the vector form of onePlusExp).
__attribute__((target("avx512f"))) inline __m512 onePlusExpFullAvx512(__m512 x) {
  using namespace qexp;
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(kMinX)), _mm512_set1_ps(kMaxX));
  __m512 k;
  const __m512 p = expReducedAvx512(xc, &k);
  __m512 s1, s2;
  pow2HalvesAvx512(k, &s1, &s2);
  __m512 den = _mm512_fmadd_ps(_mm512_mul_ps(p, s1), s2, _mm512_set1_ps(1.0f));
  den = _mm512_mask_mov_ps(den, _mm512_cmp_ps_mask(x, _mm512_set1_ps(kMaxX), _CMP_GT_OQ), _mm512_set1_ps(__builtin_inff()));
  den = _mm512_mask_mov_ps(den, _mm512_cmp_ps_mask(x, _mm512_set1_ps(kMinX), _CMP_LT_OQ), _mm512_set1_ps(1.0f));
  return den;
}

// expReducedAvx512 on 8 lanes.
__attribute__((target("avx2,fma"))) inline __m256 expReducedAvx2(__m256 x, __m256* k) {
  using namespace qexp;
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  *k = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), magic);
  const __m256 n = _mm256_sub_ps(*k, magic);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  const __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, r);
  return _mm256_add_ps(p, _mm256_set1_ps(1.0f));
}

// The full sequence, for any x (the vector form of onePlusExp).
__attribute__((target("avx2,fma"))) inline __m256 onePlusExpFullAvx2(__m256 x) {
  using namespace qexp;
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kMinX)), _mm256_set1_ps(kMaxX));
  __m256 k;
  const __m256 p = expReducedAvx2(xc, &k);
  __m256 s1, s2;
  pow2HalvesAvx2(k, &s1, &s2);
  __m256 den = _mm256_fmadd_ps(_mm256_mul_ps(p, s1), s2, _mm256_set1_ps(1.0f));
  den = _mm256_blendv_ps(den, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, _mm256_set1_ps(kMaxX), _CMP_GT_OQ));
  den = _mm256_blendv_ps(den, _mm256_set1_ps(1.0f), _mm256_cmp_ps(x, _mm256_set1_ps(kMinX), _CMP_LT_OQ));
  return den;
}

// onePlusExpFull's bits with fewer operations when every |x| <= 80 (no NaN):
// there x lies inside [kMinX, kMaxX], so the clamp and the two edge blends
// are no-ops, and n = round(x log2 e) is within [-116, 116], so p * 2^n is a
// normal f32: p * 2^n1 * 2^n2 is exactly p * 2^n, and
// fma(p * 2^n1, 2^n2, 1) == fma(p, 2^n, 1) (both the rounded p * 2^n + 1).
// 2^n is built from k's bits: (bits(k) - bits(1.5 * 2^23) + 127) << 23, the
// add's wrap-around shifted out. Other vectors (rare: a deep tail, inf or
// NaN) take the full sequence. Checked on all 2^32 f32 x, through SwiGLU
// (AVX-512 and AVX2): the same bits as the full sequence.
constexpr float kFastAbsMax = 80.0f;

__attribute__((target("avx512f"))) inline __m512 onePlusExpAvx512(__m512 x) {
  const __mmask16 slow = _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(kFastAbsMax), _CMP_NLE_UQ);
  if (__builtin_expect(slow != 0, 0)) return onePlusExpFullAvx512(x);
  __m512 k;
  const __m512 p = expReducedAvx512(x, &k);
  const __m512 pow2n = _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_add_epi32(_mm512_castps_si512(k), _mm512_set1_epi32(static_cast<int32_t>(127u - 0x4B400000u))), 23));
  return _mm512_fmadd_ps(p, pow2n, _mm512_set1_ps(1.0f));
}

__attribute__((target("avx2,fma"))) inline __m256 onePlusExpAvx2(__m256 x) {
  const __m256 absX = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
  const __m256 slow = _mm256_cmp_ps(absX, _mm256_set1_ps(kFastAbsMax), _CMP_NLE_UQ);
  if (__builtin_expect(_mm256_movemask_ps(slow) != 0, 0)) return onePlusExpFullAvx2(x);
  __m256 k;
  const __m256 p = expReducedAvx2(x, &k);
  const __m256 pow2n = _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_add_epi32(_mm256_castps_si256(k), _mm256_set1_epi32(static_cast<int32_t>(127u - 0x4B400000u))), 23));
  return _mm256_fmadd_ps(p, pow2n, _mm256_set1_ps(1.0f));
}

// ---- e^x for x <= 0 (softmax: x = logit - max logit) -------------------------
//
// The same reduced exponential, scaled by 2^n in two steps (n = n1 + n2, both
// halves normal powers of two) so that a subnormal result rounds once.
// x < kMinX (including -inf) gives +0. One operation sequence per ISA, so
// every ISA gives the same bits.

inline float expNonPositive(float x) {
  if (!(x >= qexp::kMinX)) return 0.0f;
  float s1, s2;
  const float p = expReducedScalar(x, &s1, &s2);
  return (p * s1) * s2;
}

__attribute__((target("avx512f"))) inline __m512 expNonPositiveAvx512(__m512 x) {
  using namespace qexp;
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kMinX), _CMP_GE_OQ);
  __m512 k;
  const __m512 p = expReducedAvx512(_mm512_max_ps(x, _mm512_set1_ps(kMinX)), &k);
  __m512 s1, s2;
  pow2HalvesAvx512(k, &s1, &s2);
  return _mm512_maskz_mul_ps(live, _mm512_mul_ps(p, s1), s2);
}

__attribute__((target("avx2,fma"))) inline __m256 expNonPositiveAvx2(__m256 x) {
  using namespace qexp;
  const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(kMinX), _CMP_GE_OQ);
  __m256 k;
  const __m256 p = expReducedAvx2(_mm256_max_ps(x, _mm256_set1_ps(kMinX)), &k);
  __m256 s1, s2;
  pow2HalvesAvx2(k, &s1, &s2);
  return _mm256_and_ps(live, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
}

}  // namespace moe::cpu::qrow
