// AVX2 row kernels of fp8 quantization and SwiGLU (contracts in
// quantize_row_kernels.h): the algorithms of quantize_row_avx512.cpp on 8
// lanes, bit-exact with the scalar code and with the AVX-512 set.
//
// Headers first, then the target pragma: header-defined functions keep the
// baseline target. Everything below has internal linkage except the RowKernels.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/numerics.h"
#include "cpu/one_plus_exp.h"
#include "cpu/quantize_row_kernels.h"

#pragma GCC target("avx2,fma,f16c")

namespace moe::cpu::qrow {
namespace {

inline __m256i set1(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }

// Loads of 8 values as f32 (bf16 widens exactly). Tails (< 8 values) go
// through a zero-padded copy, so they run the same vector code.
struct LoadF32 {
  using T = float;
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
};

struct LoadBF16 {
  using T = uint16_t;
  static __m256 load(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
};

template <class T>
inline void padTail(const T* src, int64_t n, T (&dst)[8]) {
  std::memset(dst, 0, sizeof dst);
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
}

// fp8FromFloat on 8 lanes; see fp8Bytes in quantize_row_avx512.cpp for the
// derivation (and kNaN).
template <bool kNaN = true>
inline __m256i fp8Bytes(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i absBits = _mm256_and_si256(bits, set1(0x7FFFFFFFu));
  const __m256i a = _mm256_min_epi32(absBits, set1(0x43E00000u));  // 448
  const __m256i e = _mm256_srli_epi32(a, 23);
  const __m256i c = _mm256_min_epi32(_mm256_sub_epi32(e, set1(108)), set1(13));  // 33 - d
  const __m256i d = _mm256_sub_epi32(set1(33), c);
  const __m256i word = _mm256_sub_epi32(
      a, _mm256_slli_epi32(_mm256_sub_epi32(_mm256_min_epi32(e, set1(121)), set1(1)), 23));
  const __m256i halfMinus1 = _mm256_srlv_epi32(set1(0xFFFFFFFFu), c);
  const __m256i lsb = _mm256_and_si256(_mm256_srlv_epi32(word, d), set1(1));
  const __m256i result = _mm256_srlv_epi32(_mm256_add_epi32(_mm256_add_epi32(word, halfMinus1), lsb), d);
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), set1(0x80));
  if (!kNaN) return _mm256_or_si256(result, sign);
  return _mm256_blendv_epi8(_mm256_or_si256(result, sign), set1(0x7F), _mm256_cmpgt_epi32(absBits, set1(0x7F800000u)));
}

// 8 lanes of bytes (each < 256) -> 8 bytes at q.
inline void store8(uint8_t* q, __m256i v) {
  const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packus_epi16(w, w));
}

// 4 x 8 lanes of bytes -> 32 bytes at q.
inline void store32(uint8_t* q, __m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i packed = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

template <bool kMultiply>
inline __m256 apply(__m256 v, __m256 s) {
  return kMultiply ? _mm256_mul_ps(v, s) : _mm256_div_ps(v, s);
}

template <class L, bool kMultiply, bool kNaN>
inline void convertGroup(const typename L::T* x, int64_t n, __m256 s, uint8_t* q) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    store32(q + i, fp8Bytes<kNaN>(apply<kMultiply>(L::load(x + i), s)), fp8Bytes<kNaN>(apply<kMultiply>(L::load(x + i + 8), s)),
            fp8Bytes<kNaN>(apply<kMultiply>(L::load(x + i + 16), s)), fp8Bytes<kNaN>(apply<kMultiply>(L::load(x + i + 24), s)));
  }
  for (; i + 8 <= n; i += 8) store8(q + i, fp8Bytes<kNaN>(apply<kMultiply>(L::load(x + i), s)));
  if (i < n) {
    typename L::T pad[8];
    padTail(x + i, n - i, pad);
    uint8_t out[8];
    store8(out, fp8Bytes<kNaN>(apply<kMultiply>(L::load(pad), s)));
    std::memcpy(q + i, out, static_cast<size_t>(n - i));
  }
}

template <class L>
inline void convert(const typename L::T* x, int64_t n, float scale, float inverse, bool multiply, bool finite,
                    uint8_t* q) {
  const __m256 s = _mm256_set1_ps(multiply ? inverse : scale);
  if (multiply) {
    finite ? convertGroup<L, true, false>(x, n, s, q) : convertGroup<L, true, true>(x, n, s, q);
  } else {
    finite ? convertGroup<L, false, false>(x, n, s, q) : convertGroup<L, false, true>(x, n, s, q);
  }
}

inline __m256i trackAbs(__m256i acc, __m256 v) {
  return _mm256_max_epu32(acc, _mm256_and_si256(_mm256_castps_si256(v), set1(0x7FFFFFFFu)));
}

using AbsBits = __m256i;

inline uint32_t reduceMaxBits(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}

// Max of the bits of |x[i]|, i < n, folded into acc (see quantize_row_avx512.cpp).
template <class L>
inline __m256i absMaxBits(const typename L::T* x, int64_t n, __m256i acc) {
  __m256i acc1 = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc = trackAbs(acc, L::load(x + i));
    acc1 = trackAbs(acc1, L::load(x + i + 8));
  }
  for (; i + 8 <= n; i += 8) acc = trackAbs(acc, L::load(x + i));
  if (i < n) {
    typename L::T pad[8];
    padTail(x + i, n - i, pad);
    acc1 = trackAbs(acc1, L::load(pad));
  }
  return _mm256_max_epu32(acc, acc1);
}

#include "cpu/quantize_row_tiles.h"  // inside the namespace, after the pieces it uses

// ---- SwiGLU: the operation sequence of siluMul in quantize_row_avx512.cpp ----
inline __m256 siluMul(__m256 g, __m256 up) {
  return _mm256_mul_ps(_mm256_div_ps(g, onePlusExpAvx2(_mm256_sub_ps(_mm256_setzero_ps(), g))), up);  // -g is exact
}

template <class L>
bool swigluT(const typename L::T* gate, const typename L::T* up, int64_t n, float* act) {
  __m256i acc = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = siluMul(L::load(gate + i), L::load(up + i));
    acc = trackAbs(acc, v);
    _mm256_storeu_ps(act + i, v);
  }
  if (i < n) {
    typename L::T g[8], u[8];
    padTail(gate + i, n - i, g);
    padTail(up + i, n - i, u);
    float out[8];
    const __m256 v = siluMul(L::load(g), L::load(u));  // padding lanes: silu(0) * 0 = 0
    acc = trackAbs(acc, v);
    _mm256_storeu_ps(out, v);
    std::memcpy(act + i, out, static_cast<size_t>(n - i) * sizeof(float));
  }
  return reduceMaxBits(acc) < 0x7F800000u;
}

bool swigluF32(const float* gate, const float* up, int64_t n, float* act) {
  return swigluT<LoadF32>(gate, up, n, act);
}
bool swigluBF16(const uint16_t* gate, const uint16_t* up, int64_t n, float* act) {
  return swigluT<LoadBF16>(gate, up, n, act);
}

// bf16FromFloat on 8 lanes.
inline __m256i bf16Lanes(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), set1(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, set1(0x7FFFu)), lsb), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), set1(0x40u));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, set1(0x7FFFFFFFu)), set1(0x7F800000u));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

void narrowBF16(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i packed = _mm256_packus_epi32(bf16Lanes(_mm256_loadu_ps(src + i)), bf16Lanes(_mm256_loadu_ps(src + i + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0)));
  }
  for (; i < n; ++i) dst[i] = bf16FromFloat(src[i]);
}

}  // namespace

extern const RowKernels kRowAvx2 = {
    "avx2", quantizeRowF32, quantizeRowBF16, quantizeTileF32, quantizeTileBF16, swigluF32, swigluBF16, narrowBF16,
};

}  // namespace moe::cpu::qrow
