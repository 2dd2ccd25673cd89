// AVX-512 row kernels of fp8 quantization and SwiGLU (contracts in
// quantize_row_kernels.h). Bit-exact with the scalar code: see the notes on
// fp8Bytes below and on the exp in quantize_row_kernels.h.
//
// Headers first, then the target pragma (as in gemm_fp8_avx512.cpp): functions
// defined in headers keep the baseline target. Everything below the pragma has
// internal linkage except the RowKernels object.
#include <immintrin.h>

#include <cstdint>

#include "core/numerics.h"
#include "cpu/one_plus_exp.h"
#include "cpu/quantize_row_kernels.h"

#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12's AVX-512 intrinsics self-initialize their "undefined" operands,
// which -Wall reports at every inlined call site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe::cpu::qrow {
namespace {

inline __m512i set1(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }

inline __mmask16 tailMask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// ---- loads: 16 values as f32 (bf16 widens exactly) --------------------------

struct LoadF32 {
  using T = float;
  static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static __m512 loadTail(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};

struct LoadBF16 {
  using T = uint16_t;
  static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const uint16_t* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static __m512 loadTail(const uint16_t* p, __mmask16 m) { return widen(_mm256_maskz_loadu_epi16(m, p)); }
};

// ---- fp8 conversion ---------------------------------------------------------
//
// fp8FromFloat (core/numerics.h) on 16 lanes, in integers:
// - NaN (|bits| > 0x7F800000) -> 0x7F, sign dropped.
// - |x| >= 448 -> 0x7E | sign: every value from 448 up (464 ties to even 448,
//   above 464 saturates, inf saturates) gives 0x7E, so |bits| is clamped to 448.
// - Otherwise, with E = the f32 biased exponent: the value as an integer
//   `word` counted in units of 2^-(20+dropped)... precisely:
//     normal results (E >= 121): word = |bits| - (120 << 23) (e4m3 exponent in
//       bits 23+, mantissa below), dropped d = 20;
//     subnormal ones (E <= 120): word = 1.m (24 bits), d = 141 - E (21 .. 24;
//       beyond 31 when E < 110, where shifts by >= 32 give 0).
//   result = (word + (2^(d-1) - 1) + ((word >> d) & 1)) >> d is round to
//   nearest even of word / 2^d, i.e. the scalar's remainder/half comparison;
//   a carry moves into the exponent (or from subnormal 7 to normal 0x08).
//   |x| <= 2^-10 gives 0 (2^-10 itself ties to even 0), as the scalar does.
// Returns the fp8 byte in the low byte of each 32-bit lane. kNaN = false skips
// the NaN case, for groups known to be finite (finite x / finite s is not NaN).
template <bool kNaN = true>
inline __m512i fp8Bytes(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i absBits = _mm512_and_si512(bits, set1(0x7FFFFFFFu));
  const __m512i a = _mm512_min_epi32(absBits, set1(0x43E00000u));  // 448
  const __m512i e = _mm512_srli_epi32(a, 23);
  // c = 33 - d = min(13, E - 108): 2^(d-1) - 1 = 0xFFFFFFFF >> c (0 when c <= 0).
  const __m512i c = _mm512_min_epi32(_mm512_sub_epi32(e, set1(108)), set1(13));
  const __m512i d = _mm512_sub_epi32(set1(33), c);
  // word = a - ((min(E, 121) - 1) << 23): a - (120 << 23) for normal results, 1.m below.
  const __m512i word = _mm512_sub_epi32(
      a, _mm512_slli_epi32(_mm512_sub_epi32(_mm512_min_epi32(e, set1(121)), set1(1)), 23));
  const __m512i halfMinus1 = _mm512_srlv_epi32(set1(0xFFFFFFFFu), c);
  const __m512i lsb = _mm512_and_si512(_mm512_srlv_epi32(word, d), set1(1));
  const __m512i result = _mm512_srlv_epi32(_mm512_add_epi32(_mm512_add_epi32(word, halfMinus1), lsb), d);
  // (bits >> 24 & 0x80) | result
  const __m512i withSign = _mm512_ternarylogic_epi32(_mm512_srli_epi32(bits, 24), set1(0x80), result, 0xEA);
  if (!kNaN) return withSign;
  return _mm512_mask_mov_epi32(withSign, _mm512_cmpgt_epi32_mask(absBits, set1(0x7F800000u)), set1(0x7F));
}

// fp8Bytes<false> for finite x, with a shorter sequence when every lane's
// result is a normal e4m3 number (|x| >= 2^-6, the usual case: only values
// under 1/28,672 of their group's amax are smaller). There the dropped bits
// are always 20 and 448's clamp keeps the carry inside the format, so
//   result = (a - (120 << 23) + 0x7FFFF + ((a >> 20) & 1)) >> 20
// with the two constants folded into one add ((120 << 23) has no bit 20, so
// the word's bit 20 is a's). 9 vector operations instead of 18; other vectors
// take fp8Bytes. Checked on all 2^31 finite f32 inputs of each sign against
// fp8FromFloat: the same bytes.
constexpr uint32_t kFp8NormalMinBits = 121u << 23;  // 2^-6

inline __m512i fp8BytesNormal(__m512i bits, __m512i absBits) {
  const __m512i a = _mm512_min_epu32(absBits, set1(0x43E00000u));  // 448
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, 20), set1(1));
  const __m512i result = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(a, set1(0x7FFFFu - (120u << 23))), lsb), 20);
  return _mm512_ternarylogic_epi32(_mm512_srli_epi32(bits, 24), set1(0x80), result, 0xEA);  // (bits >> 24 & 0x80) | result
}

inline __m512i fp8BytesFinite(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i absBits = _mm512_and_si512(bits, set1(0x7FFFFFFFu));
  if (__builtin_expect(_mm512_cmplt_epu32_mask(absBits, set1(kFp8NormalMinBits)) != 0, 0)) return fp8Bytes<false>(x);
  return fp8BytesNormal(bits, absBits);
}

// fp8(x / s) for finite x, mostly without a division (vdivps is the slowest
// vector operation here: one per 16 values held SwiGLU + fp8 at ~9 cycles
// each). y = x * inv, inv = RN(1/s), is within 2 ulps of RN(x / s)
// (|x * inv - x / s| <= 2^-24 |x / s|, then two roundings of at most half an
// ulp). fp8 keeps the top 3 mantissa bits of a normal result and rounds on the
// other 20, so the two give the same byte unless those 20 bits lie within 2
// ulps of the halfway point 0x80000. Vectors with a lane within 4, or with a
// result below e4m3's normal range (whose boundaries lie elsewhere), take the
// exact division and the general conversion: rare for real data (~1 vector
// in 7,000 for uniform bits). Checked against the division on 2^32 pairs.
inline __m512i fp8BytesOfQuotient(__m512 x, __m512 s, __m512 inv) {
  const __m512i bits = _mm512_castps_si512(_mm512_mul_ps(x, inv));
  const __m512i absBits = _mm512_and_si512(bits, set1(0x7FFFFFFFu));
  const __m512i rem = _mm512_and_si512(absBits, set1(0xFFFFFu));
  const __mmask16 nearHalf = _mm512_cmple_epu32_mask(_mm512_sub_epi32(rem, set1(0x80000u - 4)), set1(8));
  const __mmask16 belowNormal = _mm512_cmplt_epu32_mask(absBits, set1(kFp8NormalMinBits));
  if (__builtin_expect((nearHalf | belowNormal) != 0, 0)) return fp8Bytes<false>(_mm512_div_ps(x, s));
  return fp8BytesNormal(bits, absBits);
}

// fp8(x / scale) (s = scale, inv = RN(1 / scale)), or fp8(x * s) when
// kMultiply (s is then the exact inverse); kNaN: the group may hold NaN or inf.
template <bool kMultiply, bool kNaN>
inline __m512i fp8BytesScaled(__m512 x, __m512 s, __m512 inv) {
  if (kNaN) return fp8Bytes<true>(kMultiply ? _mm512_mul_ps(x, s) : _mm512_div_ps(x, s));
  return kMultiply ? fp8BytesFinite(_mm512_mul_ps(x, s)) : fp8BytesOfQuotient(x, s, inv);
}

// q[i] = fp8(x[i] / scale), or fp8(x[i] * scale) when `multiply` (scale is then the exact inverse).
template <class L, bool kMultiply, bool kNaN>
inline void convertGroup(const typename L::T* x, int64_t n, __m512 s, __m512 inv, uint8_t* q) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i bytes = fp8BytesScaled<kMultiply, kNaN>(L::load(x + i), s, inv);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(bytes));
  }
  if (i < n) {
    const __mmask16 m = tailMask(n - i);
    _mm512_mask_cvtepi32_storeu_epi8(q + i, m, fp8BytesScaled<kMultiply, kNaN>(L::loadTail(x + i, m), s, inv));
  }
}

template <class L>
inline void convert(const typename L::T* x, int64_t n, float scale, float inverse, bool multiply, bool finite,
                    uint8_t* q) {
  if (multiply) {
    const __m512 s = _mm512_set1_ps(inverse), unused = s;
    finite ? convertGroup<L, true, false>(x, n, s, unused, q) : convertGroup<L, true, true>(x, n, s, unused, q);
  } else {
    const __m512 s = _mm512_set1_ps(scale), inv = _mm512_set1_ps(1.0f / scale);
    finite ? convertGroup<L, false, false>(x, n, s, inv, q) : convertGroup<L, false, true>(x, n, s, inv, q);
  }
}

// max over i < n of the bits of |x[i]| as unsigned integers: for non-NaN
// values the same order as the floats, and >= 0x7F800000 iff some value is not finite.
using AbsBits = __m512i;

inline uint32_t reduceMaxBits(__m512i v) { return _mm512_reduce_max_epu32(v); }

template <class L>
inline __m512i absMaxBits(const typename L::T* x, int64_t n, __m512i acc) {
  const __m512i absMask = set1(0x7FFFFFFFu);
  __m512i acc1 = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_castps_si512(L::load(x + i)), absMask));
    acc1 = _mm512_max_epu32(acc1, _mm512_and_si512(_mm512_castps_si512(L::load(x + i + 16)), absMask));
  }
  for (; i + 16 <= n; i += 16) {
    acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_castps_si512(L::load(x + i)), absMask));
  }
  if (i < n) {
    acc1 = _mm512_max_epu32(acc1, _mm512_and_si512(_mm512_castps_si512(L::loadTail(x + i, tailMask(n - i))), absMask));
  }
  return _mm512_max_epu32(acc, acc1);
}

#include "cpu/quantize_row_tiles.h"  // inside the namespace, after the pieces it uses

// ---- SwiGLU -------------------------------------------------------------------
//
// silu(g) * up = g / (1 + e^-g) * up, with 1 + e^x from one_plus_exp.h (the
// operation sequence of the scalar siluMul in quantize.cpp; -g is exact).
// The IEEE division stays: g * rcp14(den) with one Newton step and one residual
// step (5 more FMAs) matched g / den on all but 2 of the 2^32 g (1 ulp), but was
// not faster: this loop is bound by vector-port uops, and vdivps is 3 of them.
inline __m512 siluMul(__m512 g, __m512 up) {
  return _mm512_mul_ps(_mm512_div_ps(g, onePlusExpAvx512(_mm512_sub_ps(_mm512_setzero_ps(), g))), up);
}

// Tracks max |bits|: >= 0x7F800000 iff a value was not finite.
inline __m512i trackAbs(__m512i acc, __m512 v) {
  return _mm512_max_epu32(acc, _mm512_and_si512(_mm512_castps_si512(v), set1(0x7FFFFFFFu)));
}

template <class L>
bool swigluT(const typename L::T* gate, const typename L::T* up, int64_t n, float* act) {
  __m512i acc = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = siluMul(L::load(gate + i), L::load(up + i));
    acc = trackAbs(acc, v);
    _mm512_storeu_ps(act + i, v);
  }
  if (i < n) {
    const __mmask16 m = tailMask(n - i);
    const __m512 v = _mm512_maskz_mov_ps(m, siluMul(L::loadTail(gate + i, m), L::loadTail(up + i, m)));
    acc = trackAbs(acc, v);
    _mm512_mask_storeu_ps(act + i, m, v);
  }
  return _mm512_reduce_max_epu32(acc) < 0x7F800000u;
}

bool swigluF32(const float* gate, const float* up, int64_t n, float* act) {
  return swigluT<LoadF32>(gate, up, n, act);
}
bool swigluBF16(const uint16_t* gate, const uint16_t* up, int64_t n, float* act) {
  return swigluT<LoadBF16>(gate, up, n, act);
}

// bf16FromFloat on 16 lanes: round to nearest even; NaN -> (bits >> 16) | 0x40.
inline __m256i bf16Bits(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), set1(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, set1(0x7FFFu)), lsb), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), set1(0x40u));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, set1(0x7FFFFFFFu)), set1(0x7F800000u));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet));
}

void narrowBF16(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), bf16Bits(_mm512_loadu_ps(src + i)));
  }
  if (i < n) {
    const __mmask16 m = tailMask(n - i);
    _mm256_mask_storeu_epi16(dst + i, m, bf16Bits(_mm512_maskz_loadu_ps(m, src + i)));
  }
}

}  // namespace

extern const RowKernels kRowAvx512 = {
    "avx512", quantizeRowF32, quantizeRowBF16, quantizeTileF32, quantizeTileBF16, swigluF32, swigluBF16, narrowBF16,
};

}  // namespace moe::cpu::qrow
