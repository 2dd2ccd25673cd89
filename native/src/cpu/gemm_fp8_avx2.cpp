// AVX2 + FMA + F16C kernels of the fp8 GEMM (see gemm_fp8_kernels.h for the
// contracts). The packed path decodes fp8 as gemm_fp8_avx512.cpp does (via
// f16 bits and F16C, with 256-bit vectors); the streaming kernels (small M)
// build the f32 bits with integer operations (see "small-M streaming").
//
// Headers first, then the target pragma: header-defined functions keep the
// baseline target. Everything below has internal linkage except the KernelSet.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/gemm_fp8_kernels.h"

#pragma GCC target("avx2,fma,f16c")

namespace moe::cpu::fp8gemm {
namespace {

// Micro-tile 6 x 16: 12 ymm accumulators + 2 B vectors + 1 broadcast of 16
// registers. Per k: 12 FMAs (6 cycles on 2 ports) against 2 + 6 loads.
// Measured on this Zen 5 (thread CPU time): alone, with its B panel in L1
// and A in L2, 97-100% of fmaBurn; inside the GEMM (one core, M >= 128)
// 88-95%, the rest mostly packing B (~0.1 ns per weight: ~10% of the time at
// M = 64, ~5% at M = 128). nr = 24 (4 x 24, one load fewer per 12 FMAs) is
// ruled out: a panel must not cross a 128-row scale block, so nr divides 128.
constexpr int kMr = 6;
constexpr int kNr = 16;

constexpr float kHalfUnit = 256.0f;  // decoded f16 = fp8 / 256

// fp8 byte s.eeee.mmm -> f16 bits s.0eeee.mmm0000000 (= fp8 / 256, exact).
inline __m256i halfBitsFromFp8(__m128i bytes) {
  const __m256i words = _mm256_cvtepi8_epi16(bytes);
  return _mm256_and_si256(_mm256_slli_epi16(words, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
}

inline __m256 lowHalfToFloat(__m256i h) { return _mm256_cvtph_ps(_mm256_castsi256_si128(h)); }
inline __m256 highHalfToFloat(__m256i h) { return _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)); }

// NaN codes 0x7F/0xFF are exactly the bytes with (b | 0x80) == 0xFF.
inline __m128i trackNan(__m128i acc, __m128i bytes) {
  return _mm_max_epu8(acc, _mm_or_si128(bytes, _mm_set1_epi8(static_cast<char>(0x80))));
}
inline bool sawNan(__m128i acc) { return _mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_set1_epi8(-1))) != 0; }

// NaN codes over 32 bytes in two operations and one register: a byte added
// to itself keeps its low 7 bits, shifted up, and they are all ones (0xFE,
// the largest even byte) exactly for the NaN codes 0x7F and 0xFF.
struct NanTracker32 {
  __m256i doubledMax;
  NanTracker32() : doubledMax(_mm256_setzero_si256()) {}
  void add(__m256i bytes) { doubledMax = _mm256_max_epu8(doubledMax, _mm256_add_epi8(bytes, bytes)); }
  bool saw() const {
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(doubledMax, _mm256_set1_epi8(static_cast<char>(0xFE)))) != 0;
  }
};

// ---- packing ----------------------------------------------------------------

bool packA(const uint8_t* src, int64_t lds, const float* scales, int64_t ldScales, int64_t rows,
           int64_t k0, int64_t kc, float* dst, int64_t ldd) {
  __m128i nan = _mm_setzero_si128();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src + r * lds + k0;
    const float* scaleRow = scales + r * ldScales;
    float* out = dst + r * ldd;
    for (int64_t k = 0; k < kc; k += 16) {  // 16 | 128: one scale per chunk
      const __m256 scale = _mm256_set1_ps(scaleRow[(k0 + k) >> 7] * kHalfUnit);
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k));
      nan = trackNan(nan, bytes);
      const __m256i h = halfBitsFromFp8(bytes);
      _mm256_storeu_ps(out + k, _mm256_mul_ps(lowHalfToFloat(h), scale));
      _mm256_storeu_ps(out + k + 8, _mm256_mul_ps(highHalfToFloat(h), scale));
    }
  }
  return sawNan(nan);
}

// Two 16x16 byte transposes at once, one per 128-bit lane: on return lane h
// of x[j] holds byte j of lane h of the 16 input rows. Four rounds of
// unpacks (8, 16, 32, 64 bits), 64 shuffles for 512 bytes.
inline void transpose16x16BytesPerLane(__m256i x[16]) {
  __m256i a[16], b[16], c[16];
  for (int p = 0; p < 8; ++p) {  // a[2p + h]: rows 2p, 2p+1; bytes 8h .. 8h+7
    a[2 * p] = _mm256_unpacklo_epi8(x[2 * p], x[2 * p + 1]);
    a[2 * p + 1] = _mm256_unpackhi_epi8(x[2 * p], x[2 * p + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // b[4q + s]: rows 4q .. 4q+3; bytes 4s .. 4s+3
    for (int h = 0; h < 2; ++h) {
      b[4 * q + 2 * h] = _mm256_unpacklo_epi16(a[4 * q + h], a[4 * q + 2 + h]);
      b[4 * q + 2 * h + 1] = _mm256_unpackhi_epi16(a[4 * q + h], a[4 * q + 2 + h]);
    }
  }
  for (int u = 0; u < 2; ++u) {  // c[8u + t]: rows 8u .. 8u+7; bytes 2t, 2t+1
    for (int s = 0; s < 4; ++s) {
      c[8 * u + 2 * s] = _mm256_unpacklo_epi32(b[8 * u + s], b[8 * u + 4 + s]);
      c[8 * u + 2 * s + 1] = _mm256_unpackhi_epi32(b[8 * u + s], b[8 * u + 4 + s]);
    }
  }
  for (int t = 0; t < 8; ++t) {
    x[2 * t] = _mm256_unpacklo_epi64(c[t], c[8 + t]);
    x[2 * t + 1] = _mm256_unpackhi_epi64(c[t], c[8 + t]);
  }
}

// One k of a panel: 16 fp8 codes (one per column) -> 16 scaled floats.
inline void storePanelRow(__m128i bytes, __m256 scale, float* out) {
  const __m256i h = halfBitsFromFp8(bytes);
  _mm256_store_ps(out, _mm256_mul_ps(lowHalfToFloat(h), scale));
  _mm256_store_ps(out + 8, _mm256_mul_ps(highHalfToFloat(h), scale));
}

// 32 k per step: each row's 32 bytes in one load, k .. k+15 in the low lane
// and k+16 .. k+31 in the high one, transposed lane by lane (0.87-0.92x the
// time of one 16 x 16 transpose per 16 k with 128-bit vectors). k and k+31
// share a scale group (32 | 128). A last step of 16 k (kc % 32 == 16) leaves
// the high lane zero and unstored.
bool packB(const uint8_t* src, int64_t lds, const float* scaleRow, int64_t rows, int64_t k0, int64_t kc,
           float* dst) {
  NanTracker32 nan;
  for (int64_t k = 0; k < kc; k += 32) {
    const bool full = k + 32 <= kc;
    __m256i x[16];
    for (int r = 0; r < 16; ++r) {
      const uint8_t* row = src + r * lds + k0 + k;
      x[r] = r >= rows ? _mm256_setzero_si256()
             : full    ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row))
                       : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row)));
      nan.add(x[r]);
    }
    transpose16x16BytesPerLane(x);
    const __m256 scale = _mm256_set1_ps(scaleRow[(k0 + k) >> 7] * kHalfUnit);
    float* out = dst + k * kNr;
    for (int j = 0; j < 16; ++j) storePanelRow(_mm256_castsi256_si128(x[j]), scale, out + j * kNr);
    if (full) {
      for (int j = 0; j < 16; ++j) storePanelRow(_mm256_extracti128_si256(x[j], 1), scale, out + (16 + j) * kNr);
    }
  }
  return nan.saw();
}

// ---- microkernel ------------------------------------------------------------

inline __m128i bf16FromFloat8(__m256 v);

template <int MR>
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate, TileOut out,
           void* d, int64_t ldd) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    c0[i] = c1[i] = _mm256_setzero_ps();
    // The C tile is cold (L2/L3 between K blocks): start fetching this
    // tile's rows (one line each) now so they have arrived when the kc FMAs
    // are done.
    if (accumulate || out == TileOut::kAccumulator) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * kNr);
    const __m256 b1 = _mm256_load_ps(b + k * kNr + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * kKc + k);
      c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      c0[i] = _mm256_add_ps(c0[i], _mm256_loadu_ps(row));
      c1[i] = _mm256_add_ps(c1[i], _mm256_loadu_ps(row + 8));
    }
    if (out == TileOut::kAccumulator) {
      _mm256_storeu_ps(row, c0[i]);
      _mm256_storeu_ps(row + 8, c1[i]);
    } else if (out == TileOut::kF32) {
      float* dRow = static_cast<float*>(d) + i * ldd;
      _mm256_storeu_ps(dRow, c0[i]);
      _mm256_storeu_ps(dRow + 8, c1[i]);
    } else {
      uint16_t* dRow = static_cast<uint16_t*>(d) + i * ldd;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dRow), bf16FromFloat8(c0[i]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dRow + 8), bf16FromFloat8(c1[i]));
    }
  }
}

// ---- small-M streaming --------------------------------------------------------
//
// The streaming kernels decode fp8 to f32 with integer operations only: the
// byte s.eeee.mmm moved to the top of a dword, shifted right arithmetically by
// 4 and masked is the f32 s | eeee << 23 | mmm << 20, that is fp8 * 2^-120
// exactly: exponent field e for e4m3 exponent e - 7, and the subnormal codes
// (e = 0) become f32 subnormals with the same mantissa (-0 stays -0; the NaN
// codes decode to a finite value and are caught on the bytes). F16C's
// conversion, one per 8 weights, is what bound the previous decode (31.8 GB/s
// from L2 against 51.7 with a plain move in its place); this one is 8
// operations per 32 weights and no shuffle. M = 1, one thread, weights in
// L1/L2: 16.2 -> 24.6-26.3 GB/s; 2 threads from memory: 49-60% of the
// bandwidth, was 38-45% (bench/RESULTS.md, 2026-12-07). The kernel is bound
// by its vector operations (the NaN tracking's 2 of 15 per 32 weights, left
// out, ran 1.12x as fast from cache), so each one counts.
//
// The factor 2^-120 is split: scaleForStream multiplies A by 2^64
// (kStreamAUnit) and streamRows multiplies each output by 2^56 (kStreamOutUnit),
// both exact, so a product is computed as fp8 * a * 2^-56. Results are the
// exact-rounding ones as long as |a * sb| < 2^64 and the products stay above
// 2^-70 (f32 subnormals below that), far outside what block-scaled fp8 holds.
//
// K order: 32 k at a time, the bytes are loaded as 8 dwords and dword q gives
// lane q of four vectors, v[j] = k 4q + j. scaleForStream stores A in that
// order (a[32c + 8j + q] = A[32c + 4q + j]), so each chunk is four FMAs,
// v[0] .. v[3], into one 8-lane accumulator. A K tail of 16 (K % 32 == 16)
// uses 4 dwords, lanes 0..3 (a[32c + 4j + q] = A[32c + 4q + j], q < 4), and
// leaves lanes 4..7 alone. Then the 8 lanes are summed by hsum. Every
// streaming kernel below does exactly these operations per output, so a row's
// bits depend on K alone, not on which kernel, row block or K chunk ran it
// (batch invariance, gemm_fp8.cpp).

constexpr float kStreamAUnit = 0x1p64f;
constexpr float kStreamOutUnit = 0x1p56f;
static_assert(kStreamAUnit * kStreamOutUnit == 0x1p120f, "the two factors undo the decode's 2^-120");

// f32 bits of the byte at the top of each word of w, times 2^-120, in the top
// half of each dword: sign, 4 exponent and 3 mantissa bits shifted right by 4
// (arithmetically, so that bit 31 keeps the sign) and masked.
constexpr int kF32Mask = static_cast<int>(0x87F00000u);

// Words of 16 * (signed) byte 0 or byte 1 of each word of d (for byte 1,
// what the mask keeps of it): what the mask keeps of the byte at the top of
// its word shifted right by 4. Two ways, the same decoded values:
// - kMultiply: VPMADDUBSW with the other byte's factor 0, one operation per
//   byte (where a shift took two for bytes 0 and 2: up by 8, then down by 4),
//   on the multiply pipes.
// - kShift: byte 1 by one arithmetic shift of the word (byte 0's top nibble
//   lands below the mask), byte 0 by two; on the shift pipes.
// Which is faster depends on the FMAs beside the decode (Zen 5, one thread,
// operands in L1/L2, old and new alternating): at one row of A the multiply
// pipes are idle, at three and more rows of A they also run the FMAs.
enum class ByteMove { kMultiply, kShift };
constexpr short kByte0Times16 = 0x0010;  // unsigned factor bytes (16, 0) of each word
constexpr short kByte1Times16 = 0x1000;  // (0, 16)

template <ByteMove Move>
inline __m256i oddBytesTimes16(__m256i d) {  // bytes 1, 3 of each dword
  return Move == ByteMove::kMultiply ? _mm256_maddubs_epi16(_mm256_set1_epi16(kByte1Times16), d) : _mm256_srai_epi16(d, 4);
}
template <ByteMove Move>
inline __m256i evenBytesTimes16(__m256i d) {  // bytes 0, 2 of each dword
  return Move == ByteMove::kMultiply ? _mm256_maddubs_epi16(_mm256_set1_epi16(kByte0Times16), d)
                                     : _mm256_srai_epi16(_mm256_slli_epi16(d, 8), 4);
}
template <ByteMove Move>
inline __m128i oddBytesTimes16(__m128i d) {
  return Move == ByteMove::kMultiply ? _mm_maddubs_epi16(_mm_set1_epi16(kByte1Times16), d) : _mm_srai_epi16(d, 4);
}
template <ByteMove Move>
inline __m128i evenBytesTimes16(__m128i d) {
  return Move == ByteMove::kMultiply ? _mm_maddubs_epi16(_mm_set1_epi16(kByte0Times16), d)
                                     : _mm_srai_epi16(_mm_slli_epi16(d, 8), 4);
}

// v[j] lane q = fp8(byte 4q + j of d) * 2^-120: the odd and even bytes'
// words (above), 2 shifts and 4 ANDs.
template <ByteMove Odd = ByteMove::kMultiply, ByteMove Even = ByteMove::kMultiply>
inline void decode32(__m256i d, __m256 v[4]) {
  const __m256i mask = _mm256_set1_epi32(kF32Mask);
  const __m256i odd = oddBytesTimes16<Odd>(d);     // bytes 1, 3, times 16
  const __m256i even = evenBytesTimes16<Even>(d);  // bytes 0, 2, times 16
  v[0] = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(even, 16), mask));
  v[1] = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(odd, 16), mask));
  v[2] = _mm256_castsi256_ps(_mm256_and_si256(even, mask));
  v[3] = _mm256_castsi256_ps(_mm256_and_si256(odd, mask));
}

// The same for 16 bytes (4 dwords): the K tail.
template <ByteMove Odd = ByteMove::kMultiply, ByteMove Even = ByteMove::kMultiply>
inline void decode16(__m128i d, __m128 v[4]) {
  const __m128i mask = _mm_set1_epi32(kF32Mask);
  const __m128i odd = oddBytesTimes16<Odd>(d);
  const __m128i even = evenBytesTimes16<Even>(d);
  v[0] = _mm_castsi128_ps(_mm_and_si128(_mm_slli_epi32(even, 16), mask));
  v[1] = _mm_castsi128_ps(_mm_and_si128(_mm_slli_epi32(odd, 16), mask));
  v[2] = _mm_castsi128_ps(_mm_and_si128(even, mask));
  v[3] = _mm_castsi128_ps(_mm_and_si128(odd, mask));
}

// In-lane 4 x 4 transpose of four vectors (each 128-bit lane on its own).
inline void transpose4(__m256& r0, __m256& r1, __m256& r2, __m256& r3) {
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  r0 = _mm256_shuffle_ps(t0, t2, 0x44);
  r1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  r2 = _mm256_shuffle_ps(t1, t3, 0x44);
  r3 = _mm256_shuffle_ps(t1, t3, 0xEE);
}

// dst = src * scaleRow[k / 128] * kStreamAUnit, each row put in the decode's K
// order (see above).
void scaleForStream(const float* src, int64_t rows, int64_t K, int64_t ld, const float* scaleRow, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * ld;
    float* out = dst + r * ld;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {  // 32 | 128: one scale per chunk
      const __m256 scale = _mm256_set1_ps(scaleRow[k >> 7] * kStreamAUnit);
      // x[h] = A[k + 8h .. k + 8h + 7] = rows q = 2h, 2h + 1 of the chunk's [8 q][4 j].
      const __m256 x0 = _mm256_loadu_ps(in + k), x1 = _mm256_loadu_ps(in + k + 8);
      const __m256 x2 = _mm256_loadu_ps(in + k + 16), x3 = _mm256_loadu_ps(in + k + 24);
      // y[h]: row q = h in the low lane, q = h + 4 in the high one; transposed in lane, y[j] = column j.
      __m256 y0 = _mm256_permute2f128_ps(x0, x2, 0x20), y1 = _mm256_permute2f128_ps(x0, x2, 0x31);
      __m256 y2 = _mm256_permute2f128_ps(x1, x3, 0x20), y3 = _mm256_permute2f128_ps(x1, x3, 0x31);
      transpose4(y0, y1, y2, y3);
      _mm256_storeu_ps(out + k, _mm256_mul_ps(y0, scale));
      _mm256_storeu_ps(out + k + 8, _mm256_mul_ps(y1, scale));
      _mm256_storeu_ps(out + k + 16, _mm256_mul_ps(y2, scale));
      _mm256_storeu_ps(out + k + 24, _mm256_mul_ps(y3, scale));
    }
    if (k < K) {  // K % 32 == 16: rows q < 4 only
      const __m128 scale = _mm_set1_ps(scaleRow[k >> 7] * kStreamAUnit);
      __m128 x0 = _mm_loadu_ps(in + k), x1 = _mm_loadu_ps(in + k + 4);
      __m128 x2 = _mm_loadu_ps(in + k + 8), x3 = _mm_loadu_ps(in + k + 12);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      _mm_storeu_ps(out + k, _mm_mul_ps(x0, scale));
      _mm_storeu_ps(out + k + 4, _mm_mul_ps(x1, scale));
      _mm_storeu_ps(out + k + 8, _mm_mul_ps(x2, scale));
      _mm_storeu_ps(out + k + 12, _mm_mul_ps(x3, scale));
    }
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// An output from its accumulator: the lanes summed, the decode's factor undone.
inline float finalSum(__m256 acc) { return hsum(acc) * kStreamOutUnit; }

// Per half, lanes 0, 1 of p plus its lanes 2, 3, then the same of q:
// [p0 + p2, p1 + p3, q0 + q2, q1 + q3 | the same of the high halves].
inline __m256 addLanePairs(__m256 p, __m256 q) {
  return _mm256_add_ps(_mm256_shuffle_ps(p, q, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(p, q, _MM_SHUFFLE(3, 2, 3, 2)));
}

// finalSum of eight accumulators at once, lane t from x[t], bit for bit: the
// same additions as hsum's, (l0 + l4 + (l2 + l6)) + (l1 + l5 + (l3 + l7)),
// done for eight with 21 shuffles and adds instead of 40.
inline __m256 finalSums8(const __m256 x[8]) {
  // s(x) = x's low half + its high half: [s(x_t) | s(x_t+4)] for t < 4.
  __m256 s[4];
  for (int t = 0; t < 4; ++t)
    s[t] = _mm256_add_ps(_mm256_permute2f128_ps(x[t], x[t + 4], 0x20), _mm256_permute2f128_ps(x[t], x[t + 4], 0x31));
  // u0 = [x0: s0 + s2, s1 + s3; x1: the same | x4; x5], u1 the same of x2, x3 | x6, x7.
  const __m256 u0 = addLanePairs(s[0], s[1]), u1 = addLanePairs(s[2], s[3]);
  const __m256 sums = _mm256_add_ps(_mm256_shuffle_ps(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                                    _mm256_shuffle_ps(u0, u1, _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm256_mul_ps(sums, _mm256_set1_ps(kStreamOutUnit));
}

// out[j] = finalSum(x[j]) for j < count.
inline void storeFinalSums(const __m256* x, int64_t count, float* out) {
  const int64_t whole = count - count % 8;
  for (int64_t j = 0; j < whole; j += 8) _mm256_storeu_ps(out + j, finalSums8(x + j));
  for (int64_t j = whole; j < count; ++j) out[j] = finalSum(x[j]);
}

// acc += a[0..31] * v[0..3] (32 k of one chunk, in order).
inline __m256 fmaChunk(const float* a, const __m256 v[4], __m256 acc) {
  acc = _mm256_fmadd_ps(_mm256_loadu_ps(a), v[0], acc);
  acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8), v[1], acc);
  acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + 16), v[2], acc);
  return _mm256_fmadd_ps(_mm256_loadu_ps(a + 24), v[3], acc);
}

// The K tail: lanes 0..3 of acc += a[0..15] * v[0..3]; lanes 4..7 unchanged.
inline __m256 fmaTail(const float* a, const __m128 v[4], __m256 acc) {
  __m128 lo = _mm256_castps256_ps128(acc);
  lo = _mm_fmadd_ps(_mm_loadu_ps(a), v[0], lo);
  lo = _mm_fmadd_ps(_mm_loadu_ps(a + 4), v[1], lo);
  lo = _mm_fmadd_ps(_mm_loadu_ps(a + 8), v[2], lo);
  lo = _mm_fmadd_ps(_mm_loadu_ps(a + 12), v[3], lo);
  return _mm256_insertf128_ps(acc, lo, 0);
}

// Software prefetch ahead of every B row being streamed, one line per 64
// bytes. Long rows (K >= 4096): 1 KiB further along the row; the hardware
// prefetchers stop at 4 KiB page boundaries (a caller's weights need not sit
// on huge pages), so each row's next page is requested, and its TLB walk
// done, before the loads reach it (+5-10% at M = 1); within 1 KiB of the
// row's end, the same row of the next tile (B's rows are contiguous, a tile
// is NB of them), so that a tile starts warm. Shorter rows: the same place in
// the tile(s) >= 4 KiB further on, as a 1 KiB distance would land inside the
// tile itself; at K = 512..2048 that streamed 1.15-1.4x the bytes per CPU
// second.
constexpr int64_t kPrefetchBytes = 1024;
constexpr int64_t kPrefetchTileBytes = 4096;
constexpr int64_t kLongRow = 4096;

inline int64_t prefetchDistance(int64_t rowBytes, int nb) {
  if (rowBytes >= kLongRow) return kPrefetchBytes;
  return nb * rowBytes * ((kPrefetchTileBytes + nb * rowBytes - 1) / (nb * rowBytes));
}

inline void prefetchB(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }


// Direct form (few rows of A): MR rows of A against NB rows of B over all of
// K, B decoded in registers, 32 k per step. Per 32 bytes of B: one load, 2
// NaN-tracking and 8 decode operations shared by the MR rows, 4 FMAs per row.
// The decode's byte moves (ByteMove) for MR rows of A: all on the multiply
// pipes at one row, one of the two on the shift pipes at two, both at three
// and four. Against both on the multiply pipes (one thread, B in L2, old and
// new alternating, 256 x 1792 and 512 x 512): MR = 2 0.93-0.94x the time
// (both on the shift pipes 1.0x), MR = 3 0.92x, MR = 4 0.87-0.90x; at MR = 1
// one on the shift pipes took 1.03x, both 1.17x.
template <int MR>
constexpr ByteMove kOddMove = MR == 1 ? ByteMove::kMultiply : ByteMove::kShift;
template <int MR>
constexpr ByteMove kEvenMove = MR <= 2 ? ByteMove::kMultiply : ByteMove::kShift;

template <int MR, int NB>
bool streamTile(const float* a, int64_t lda, const uint8_t* b, int64_t ldb, int64_t K, float* out, int64_t ldo) {
  __m256 acc[MR][NB];
#pragma GCC unroll 32
  for (int i = 0; i < MR * NB; ++i) acc[i / NB][i % NB] = _mm256_setzero_ps();
  NanTracker32 nan;
  const int64_t ahead = prefetchDistance(ldb, NB);
  const int64_t wrap = ldb >= kLongRow ? (NB - 1) * ldb : 0;  // row j + ahead past its end -> row j + NB
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      const uint8_t* row = b + j * ldb + k;
      if ((k & 63) == 0) prefetchB(row + ahead + (k + ahead >= ldb ? wrap : 0));
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
      nan.add(bytes);
      __m256 v[4];
      decode32<kOddMove<MR>, kEvenMove<MR>>(bytes, v);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = fmaChunk(a + i * lda + k, v, acc[i][j]);
    }
  }
  bool tailNan = false;
  if (k < K) {  // K % 32 == 16
    __m128i tail = _mm_setzero_si128();
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j * ldb + k));
      tail = trackNan(tail, bytes);
      __m128 v[4];
      decode16<kOddMove<MR>, kEvenMove<MR>>(bytes, v);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = fmaTail(a + i * lda + k, v, acc[i][j]);
    }
    tailNan = sawNan(tail);
  }
  if constexpr (MR == 1) {
    storeFinalSums(acc[0], NB, out);
  } else {
    alignas(32) float sums[MR * NB];
    storeFinalSums(&acc[0][0], MR * NB, sums);
#pragma GCC unroll 32
    for (int i = 0; i < MR * NB; ++i) out[(i / NB) * ldo + i % NB] = sums[i];
  }
  return nan.saw() || tailNan;
}

// Rows of B per tile for MR rows of A. One row alone takes 8 (8 independent
// FMA chains hide the FMA latency, and 8 streams keep enough loads in
// flight; 6, 10 or 12 ran 1.03-1.2x as long). Two to four rows take more
// than their accumulators fit beside the decode in 16 ymm registers: the
// compiler keeps each A chunk in registers for the whole tile and spills
// accumulators instead, and the more B rows share those A loads the better.
// Against 4, 3, 2 (one thread, CPU time, old and new alternating, weights
// from memory; N x K = 1024 x 1792, 1792 x 512, 128 x 7168): M = 2 at 6:
// 0.89-0.98x the time; M = 3 at 6: 0.86-0.98x; M = 4 at 5: 0.77-0.92x.
// With the decode on the shift pipes at 2-4 rows (kOddMove), 8 at M = 2
// and 3 against 6 (alternating, 256 x 1792 and 512 x 512 from L2, 1024 x
// 1792 and 1792 x 512 from memory): M = 2 0.95-0.98x, M = 3 0.94-0.97x (10:
// 0.92-1.00x); M = 4 at 4 or 6 against 5: 1.04-1.09x.
constexpr int nbFor(int mr) { return mr == 1 ? 8 : mr == 2 ? 8 : mr == 3 ? 8 : 5; }
constexpr int kTileMaxRows = 4;  // rows of A per streamTile

// More rows of A than a tile takes: the direct form cuts them into near-equal
// blocks of <= kTileMaxRows and runs each block's tiles over a span of
// kDirectSpanRows B rows before the next span, so B comes from memory for the
// first block and from L1/L2 for the others (30 rows of 7168 bytes: 210 KiB;
// 30 rows are whole tiles of 5; 40, whole tiles of 5 and 8 too, ran M = 8,
// two blocks of 4, at 1.05-1.07x the time). Each block decodes B again, yet
// at 2-4 rows the tiles run near the FMA rate, while the decoded form below
// loses its decode, stores and reloads to few rows. Against the decoded form
// (one thread, alternating, bits equal), B from memory at 1024 x 1792,
// 1792 x 512, 256 x 7168: M = 5 0.60-0.88x the time, 8 0.82-0.98x, 10
// 0.92-1.02x; B in L2 at 256 x 1792 and 512 x 512: M = 5 0.70-0.79x, 6
// 0.81-0.88x, 7 0.84-0.95x, 8 0.91-0.98x, 9 0.88-0.95x, 10 0.93-0.98x, 12
// 0.98-1.03x, 16 1.03-1.09x. Again with a task of whole 128-row blocks (as
// one thread takes them; the figures above had 32- or 64-row tasks), B from
// memory, two runs each: M = 11..14 0.92-0.97x at 1024 x 1792, 0.87-1.01x
// at 256 x 7168, 0.94-0.98x at 1792 x 512 and 512 x 512; M = 15 0.98-1.14x,
// M = 16 0.95-1.03x.
constexpr int kDirectMaxRows = 14;  // more rows of A: the decoded form below
constexpr int64_t kDirectSpanRows = 30;

using StreamTileFn = bool (*)(const float*, int64_t, const uint8_t*, int64_t, int64_t, float*, int64_t);

template <int MR, int NB>
StreamTileFn streamTileOrSmaller(int nb) {
  if constexpr (NB == 1) {
    return streamTile<MR, 1>;
  } else {
    return nb >= NB ? streamTile<MR, NB> : streamTileOrSmaller<MR, NB - 1>(nb);
  }
}

StreamTileFn pickStreamTile(int mr, int nb) {
  switch (mr) {
    case 1: return streamTileOrSmaller<1, nbFor(1)>(nb);
    case 2: return streamTileOrSmaller<2, nbFor(2)>(nb);
    case 3: return streamTileOrSmaller<3, nbFor(3)>(nb);
    default: return streamTileOrSmaller<4, nbFor(4)>(nb);
  }
}

// rows <= kDirectMaxRows: B streamed once, decoded in registers (once per
// block of kTileMaxRows rows of A).
bool streamRowsDirect(const float* a, int64_t lda, int64_t rows, const uint8_t* b, int64_t ldb, int64_t nRows,
                      int64_t K, float* out, int64_t ldo) {
  bool nan = false;
  const int64_t blocks = (rows + kTileMaxRows - 1) / kTileMaxRows;
  const int mr = static_cast<int>(rows / blocks);  // the first block's rows (the smallest)
  // A task's first lines are not prefetched by an earlier tile (the tile
  // before them belongs to a task another thread may be running): the first
  // tile requests what its own prefetches skip, all at once, before it starts.
  const int nb0 = static_cast<int>(std::min<int64_t>(nbFor(mr), nRows));
  const int64_t ahead = prefetchDistance(ldb, nb0);
  if (ldb >= kLongRow) {
    for (int64_t j = 0; j < nb0; ++j)
      for (int64_t x = 0; x < ahead; x += 64) prefetchB(b + j * ldb + x);
  } else {
    for (int64_t x = 0; x < std::min(ahead, nRows * ldb); x += 64) prefetchB(b + x);
  }
  const int64_t span = blocks == 1 ? nRows : kDirectSpanRows;
  for (int64_t j0 = 0; j0 < nRows; j0 += span) {
    const int64_t j1 = std::min(nRows, j0 + span);
    for (int64_t ib = 0; ib < blocks; ++ib) {
      const int64_t i0 = rows * ib / blocks;
      const int bmr = static_cast<int>(rows * (ib + 1) / blocks - i0);
      for (int64_t jb = j0; jb < j1;) {
        const int nb = static_cast<int>(std::min<int64_t>(nbFor(bmr), j1 - jb));
        nan |= pickStreamTile(bmr, nb)(a + i0 * lda, lda, b + jb * ldb, ldb, K, out + i0 * ldo + jb, ldo);
        jb += nb;
      }
    }
  }
  return nan;
}

// Decoded form (more rows of A): a panel of B rows is decoded once per K chunk
// into an L1/L2 buffer and reused by every row of A, so decoding costs once
// per B element instead of once per block of rows. Register tile 4 x 3: 12
// accumulators, 3 B vectors and one A vector; per 8 k: 7 loads, 12 FMAs.
constexpr int kDotMr = 4;
constexpr int kDotNb = 3;
// The buffers live on the stack (72 KiB together: two decoded panels and the
// accumulators). Per chunk and row block the A rows [4, 512] (8 KiB) stay in
// L1 across the panel's 4 column groups.
constexpr int64_t kDotKc = 512;        // K per chunk: a multiple of 32
constexpr int64_t kDotPanelRows = 12;  // B rows decoded together: [12, 512] f32 = 24 KiB
constexpr int64_t kDotRowPanel = 64;   // A rows per pass over B: accumulators [64, 12] x 8 f32 = 24 KiB

// dec[j, k] = fp8(b[j, k0 + k]) * 2^-120 for j < nb, k < kc, in the decode's
// K order (32-k chunks of v[0..3], a 16-k tail of four 4-lane vectors).
//   dec: [nb, kDotKc].
bool decodePanel(const uint8_t* b, int64_t ldb, int64_t nb, int64_t k0, int64_t kc, float* dec) {
  NanTracker32 nan;
  __m128i tail = _mm_setzero_si128();
  for (int64_t j = 0; j < nb; ++j) {
    const uint8_t* src = b + j * ldb + k0;
    float* dst = dec + j * kDotKc;
    int64_t k = 0;
    for (; k + 32 <= kc; k += 32) {
      if ((k & 63) == 0) prefetchB(src + k + kPrefetchBytes);
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k));
      nan.add(bytes);
      __m256 v[4];
      decode32(bytes, v);
      for (int q = 0; q < 4; ++q) _mm256_store_ps(dst + k + 8 * q, v[q]);
    }
    if (k < kc) {  // kc % 32 == 16
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k));
      tail = trackNan(tail, bytes);
      __m128 v[4];
      decode16(bytes, v);
      for (int q = 0; q < 4; ++q) _mm_store_ps(dst + k + 4 * q, v[q]);
    }
  }
  return nan.saw() || sawNan(tail);
}

// acc[i, j] (8 lanes) += a[i, k] * dec[j, k] over k < kc, lane by lane, with
// the K tail (kc % 32 == 16) in lanes 0..3 as streamTile does it; on a
// panel's first chunk (`first`) acc is written, not read (the same bits as
// adding to zeros, without zeroing acc first).
//   a: [MR, lda] f32 at the chunk; dec: [NB, kDotKc]; acc: [MR, ldacc] x 8 f32.
template <int MR, int NB>
void dotTile(const float* a, int64_t lda, const float* dec, int64_t kc, bool first, float* acc, int64_t ldacc) {
  __m256 c[MR][NB];
#pragma GCC unroll 16
  for (int i = 0; i < MR * NB; ++i)
    c[i / NB][i % NB] = first ? _mm256_setzero_ps() : _mm256_load_ps(acc + ((i / NB) * ldacc + i % NB) * 8);
  const int64_t body = kc / 32 * 32;
  for (int64_t k = 0; k < body; k += 8) {
    __m256 bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = _mm256_load_ps(dec + j * kDotKc + k);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_loadu_ps(a + i * lda + k);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) c[i][j] = _mm256_fmadd_ps(av, bv[j], c[i][j]);
    }
  }
  if (body < kc) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      __m128 bv[4];
      for (int q = 0; q < 4; ++q) bv[q] = _mm_load_ps(dec + j * kDotKc + body + 4 * q);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) c[i][j] = fmaTail(a + i * lda + body, bv, c[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR * NB; ++i) _mm256_store_ps(acc + ((i / NB) * ldacc + i % NB) * 8, c[i / NB][i % NB]);
}

using DotTileFn = void (*)(const float*, int64_t, const float*, int64_t, bool, float*, int64_t);

template <int MR>
DotTileFn dotTileFn(int nb) {
  return nb == 1 ? dotTile<MR, 1> : nb == 2 ? dotTile<MR, 2> : dotTile<MR, 3>;
}

DotTileFn pickDotTile(int mr, int nb) {
  switch (mr) {
    case 1: return dotTileFn<1>(nb);
    case 2: return dotTileFn<2>(nb);
    case 3: return dotTileFn<3>(nb);
    default: return dotTileFn<4>(nb);
  }
}

// Part `part` of `parts` of the lines of a K chunk: rows [0, rows) of b, bytes
// [0, kc) of each (b at the chunk's first row and column), one prefetch per
// 64 bytes.
inline void prefetchChunkPart(const uint8_t* b, int64_t ldb, int64_t rows, int64_t kc, int64_t part, int64_t parts) {
  const int64_t perRow = (kc + 63) / 64, lines = rows * perRow;
  for (int64_t i = lines * part / parts, end = lines * (part + 1) / parts; i < end; ++i)
    prefetchB(b + (i / perRow) * ldb + (i % perRow) * 64);
}

// With rows no longer than one K chunk (K <= kDotKc) a panel is one chunk,
// and the next panel is decoded while this one is multiplied, into the other
// of two buffers, cut into as many parts as this panel has tile calls with a
// part before each call: the decode's integer operations then run beside the
// tiles' FMAs (the out-of-order window spans a part and the start of the call
// after it) instead of in a burst of their own while the FMA pipes wait. At M
// = 16, K = 512, one thread: 0.87-0.92x the CPU time. Longer rows decode each
// chunk in a burst into the one buffer, which stays in L1: overlapping them
// too (two buffers taking turns) took 1.05-1.13x the time at K = 2048..7168,
// and overlapping only a panel's first chunk 0.99-1.04x at K = 1536..7168.
// There the next chunk's lines are requested instead, a part before each tile
// call: the burst's own prefetches (1 KiB along each row) reach a panel's
// first two chunks in its first row only, and the decode waited on memory for
// the others. One thread, weights from memory, M = 16: K = 2048 0.89-0.92x
// the time (best and median of 9 runs), K = 7168 within +-2%.
bool streamRowsDecoded(const float* a, int64_t lda, int64_t rows, const uint8_t* b, int64_t ldb, int64_t nRows,
                       int64_t K, float* out, int64_t ldo) {
  alignas(64) float dec[2][kDotPanelRows * kDotKc];         // [panel rows, kDotKc]: this panel's chunk (and the next panel's)
  alignas(64) float acc[kDotRowPanel * kDotPanelRows * 8];  // [row panel, panel rows] x 8 lanes
  const bool overlap = K <= kDotKc;
  bool nan = false;
  for (int64_t r0 = 0; r0 < rows; r0 += kDotRowPanel) {
    const int64_t rp = std::min(kDotRowPanel, rows - r0);
    const int64_t rowBlocks = (rp + kDotMr - 1) / kDotMr;  // near-equal blocks of <= kDotMr rows
    int cur = 0;                                           // dec[cur]: the chunk being multiplied
    if (overlap) nan |= decodePanel(b, ldb, std::min(kDotPanelRows, nRows), 0, K, dec[cur]);
    for (int64_t j0 = 0; j0 < nRows; j0 += kDotPanelRows) {
      const int64_t np = std::min(kDotPanelRows, nRows - j0);
      const int64_t jn = j0 + kDotPanelRows, nn = overlap ? std::max<int64_t>(0, std::min(kDotPanelRows, nRows - jn)) : 0;
      for (int64_t k0 = 0; k0 < K; k0 += kDotKc) {
        const int64_t kc = std::min(kDotKc, K - k0);
        if (!overlap) nan |= decodePanel(b + j0 * ldb, ldb, np, k0, kc, dec[cur]);
        const int64_t calls = rowBlocks * ((np + kDotNb - 1) / kDotNb);
        int64_t call = 0, decoded = 0;  // of the next panel's nn rows (overlap)
        // The chunk decoded after this one (no overlap): this panel's next K chunk, or the next panel's first.
        const bool sameRows = k0 + kc < K;
        const uint8_t* next = sameRows ? b + j0 * ldb + k0 + kc : b + jn * ldb;
        const int64_t nextRows = sameRows ? np : std::max<int64_t>(0, std::min(kDotPanelRows, nRows - jn));
        const int64_t nextKc = std::min(kDotKc, sameRows ? K - k0 - kc : K);
        for (int64_t ib = 0; ib < rowBlocks; ++ib) {
          const int64_t i0 = rp * ib / rowBlocks;
          const int mr = static_cast<int>(rp * (ib + 1) / rowBlocks - i0);
          for (int64_t jg = 0; jg < np; jg += kDotNb) {
            const int nb = static_cast<int>(std::min<int64_t>(kDotNb, np - jg));
            if (!overlap) prefetchChunkPart(next, ldb, nextRows, nextKc, call, calls);
            if (nn > 0) {
              const int64_t upTo = nn * (call + 1) / calls;
              nan |= decodePanel(b + (jn + decoded) * ldb, ldb, upTo - decoded, 0, K, dec[cur ^ 1] + decoded * kDotKc);
              decoded = upTo;
            }
            pickDotTile(mr, nb)(a + (r0 + i0) * lda + k0, lda, dec[cur] + jg * kDotKc, kc, k0 == 0,
                                acc + (i0 * kDotPanelRows + jg) * 8, kDotPanelRows);
            ++call;
          }
        }
      }
      if (overlap) cur ^= 1;
      for (int64_t i = 0; i < rp; ++i)
        storeFinalSums(reinterpret_cast<const __m256*>(acc + i * kDotPanelRows * 8), np, out + (r0 + i) * ldo + j0);
    }
  }
  return nan;
}

// The streaming path's reach (KernelSet::streamMaxM). Measured against the
// packed path (2 threads, CPU time per call so that a shared machine's noise
// drops out, the six benchmark shapes), GFLOP/s decoded streaming vs packed:
// M = 16: 122-143 vs 105-125; M = 32: 136-156 vs 97-141 (5 of 6 shapes
// ahead); M = 64: 133-169 vs 143-157 (4 of 6 behind). Again after the packed
// path packed its B panels into L1 (and the streaming kernels dropped F16C),
// same method, four shapes, time packed / streaming: M = 12-20: 0.98-1.12;
// M = 24: 0.93-1.04; M = 28-32: 0.96-1.07; M = 40-64: 0.92-1.00 (one run's
// first shape, disturbed by the load, left out). The crossover still lies
// near 32.
constexpr int kStreamMaxM = 32;

bool streamRows(const float* a, int64_t lda, int64_t rows, const uint8_t* b, int64_t ldb, int64_t nRows,
                int64_t K, float* out, int64_t ldo) {
  return rows <= kDirectMaxRows ? streamRowsDirect(a, lda, rows, b, ldb, nRows, K, out, ldo)
                                : streamRowsDecoded(a, lda, rows, b, ldb, nRows, K, out, ldo);
}

// ---- output -----------------------------------------------------------------

inline uint16_t bf16FromFloatScalar(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// 8 floats -> 8 bf16, round to nearest even, NaN kept quiet.
inline __m128i bf16FromFloat8(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  // Signed compare is fine: both sides are non-negative after the mask.
  const __m256i isNan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)),
                                           _mm256_set1_epi32(0x7F800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, isNan);
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

void storeTile(const float* c, int64_t ldc, int64_t rows, int64_t cols, void* d, int64_t ldd, bool bf16) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = c + r * ldc;
    int64_t j = 0;
    if (bf16) {
      uint16_t* out = static_cast<uint16_t*>(d) + r * ldd;
      for (; j + 8 <= cols; j += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), bf16FromFloat8(_mm256_loadu_ps(in + j)));
      for (; j < cols; ++j) out[j] = bf16FromFloatScalar(in[j]);
    } else {
      float* out = static_cast<float*>(d) + r * ldd;
      for (; j + 8 <= cols; j += 8) _mm256_storeu_ps(out + j, _mm256_loadu_ps(in + j));
      for (; j < cols; ++j) out[j] = in[j];
    }
  }
}

// ---- peak probe -------------------------------------------------------------

double fmaBurn(int64_t iters, float* sink) {
  constexpr int kChains = 12;  // 2 ports x 4-5 cycles latency needs >= 10
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 0.01f * i);
  const __m256 x = _mm256_set1_ps(0.999f);
  const __m256 y = _mm256_set1_ps(0.001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  __m256 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm256_add_ps(sum, acc[i]);
  *sink = hsum(sum);
  return static_cast<double>(iters) * kChains * 8 * 2;
}

}  // namespace

extern const KernelSet kAvx2Kernels = {
    "avx2",
    kMr,
    kNr,
    kStreamMaxM,
    packA,
    packB,
    {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>, nullptr, nullptr, nullptr, nullptr,
     nullptr, nullptr, nullptr, nullptr, nullptr, nullptr},
    scaleForStream,
    streamRows,
    storeTile,
    fmaBurn,
};

}  // namespace moe::cpu::fp8gemm
