// AVX2 + FMA + F16C kernels of the fp8 GEMM (see gemm_fp8_kernels.h for the
// contracts, gemm_fp8_avx512.cpp for the fp8 decode trick, which is the same
// here with 256-bit vectors).
//
// Headers first, then the target pragma: header-defined functions keep the
// baseline target. Everything below has internal linkage except the KernelSet.
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_fp8_kernels.h"

#pragma GCC target("avx2,fma,f16c")

namespace moe::cpu::fp8gemm {
namespace {

// Micro-tile 6 x 16: 12 ymm accumulators + 2 B vectors + 1 broadcast of 16
// registers. Per k: 12 FMAs (6 cycles on 2 ports) against 2 + 6 loads.
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
inline __m256i trackNan(__m256i acc, __m256i bytes) {
  return _mm256_max_epu8(acc, _mm256_or_si256(bytes, _mm256_set1_epi8(static_cast<char>(0x80))));
}
inline bool sawNan(__m128i acc) { return _mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_set1_epi8(-1))) != 0; }
inline bool sawNan(__m256i acc) {
  return _mm256_movemask_epi8(_mm256_cmpeq_epi8(acc, _mm256_set1_epi8(-1))) != 0;
}

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

// 16x16 byte transpose: on return x[j] holds byte j of the 16 input rows.
// Four rounds of unpacks (8, 16, 32, 64 bits), 64 shuffles for 256 bytes.
inline void transpose16x16Bytes(__m128i x[16]) {
  __m128i a[16], b[16], c[16];
  for (int p = 0; p < 8; ++p) {  // a[2p + h]: rows 2p, 2p+1; bytes 8h .. 8h+7
    a[2 * p] = _mm_unpacklo_epi8(x[2 * p], x[2 * p + 1]);
    a[2 * p + 1] = _mm_unpackhi_epi8(x[2 * p], x[2 * p + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // b[4q + s]: rows 4q .. 4q+3; bytes 4s .. 4s+3
    for (int h = 0; h < 2; ++h) {
      b[4 * q + 2 * h] = _mm_unpacklo_epi16(a[4 * q + h], a[4 * q + 2 + h]);
      b[4 * q + 2 * h + 1] = _mm_unpackhi_epi16(a[4 * q + h], a[4 * q + 2 + h]);
    }
  }
  for (int u = 0; u < 2; ++u) {  // c[8u + t]: rows 8u .. 8u+7; bytes 2t, 2t+1
    for (int s = 0; s < 4; ++s) {
      c[8 * u + 2 * s] = _mm_unpacklo_epi32(b[8 * u + s], b[8 * u + 4 + s]);
      c[8 * u + 2 * s + 1] = _mm_unpackhi_epi32(b[8 * u + s], b[8 * u + 4 + s]);
    }
  }
  for (int t = 0; t < 8; ++t) {
    x[2 * t] = _mm_unpacklo_epi64(c[t], c[8 + t]);
    x[2 * t + 1] = _mm_unpackhi_epi64(c[t], c[8 + t]);
  }
}

bool packB(const uint8_t* src, int64_t lds, const float* scaleRow, int64_t rows, int64_t k0, int64_t kc,
           float* dst) {
  __m128i nan = _mm_setzero_si128();
  for (int64_t k = 0; k < kc; k += 16) {
    __m128i x[16];
    for (int r = 0; r < 16; ++r) {
      x[r] = r < rows ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + r * lds + k0 + k))
                      : _mm_setzero_si128();
      nan = trackNan(nan, x[r]);
    }
    transpose16x16Bytes(x);
    const __m256 scale = _mm256_set1_ps(scaleRow[(k0 + k) >> 7] * kHalfUnit);
    float* out = dst + k * kNr;
    for (int j = 0; j < 16; ++j) {
      const __m256i h = halfBitsFromFp8(x[j]);
      _mm256_store_ps(out + j * kNr, _mm256_mul_ps(lowHalfToFloat(h), scale));
      _mm256_store_ps(out + j * kNr + 8, _mm256_mul_ps(highHalfToFloat(h), scale));
    }
  }
  return sawNan(nan);
}

// ---- microkernel ------------------------------------------------------------

inline __m128i bf16FromFloat8(__m256 v);

template <int MR>
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate, TileOut out,
           void* d, int64_t ldd) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
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

void scaleForStream(const float* src, int64_t rows, int64_t K, int64_t ld, const float* scaleRow, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < K; k += 8) {  // 8 | 128
      const __m256 scale = _mm256_set1_ps(scaleRow[k >> 7] * kHalfUnit);
      _mm256_storeu_ps(dst + r * ld + k, _mm256_mul_ps(_mm256_loadu_ps(src + r * ld + k), scale));
    }
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// MR rows of A against NB rows of B over all of K, lanes along k (summed at
// the end); 16 k per step.
template <int MR, int NB>
bool streamTile(const float* a, int64_t lda, const uint8_t* b, int64_t ldb, int64_t K, float* out, int64_t ldo) {
  __m256 acc[MR][NB];
#pragma GCC unroll 32
  for (int i = 0; i < MR * NB; ++i) acc[i / NB][i % NB] = _mm256_setzero_ps();
  __m128i nan = _mm_setzero_si128();
  for (int64_t k = 0; k < K; k += 16) {
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j * ldb + k));
      nan = trackNan(nan, bytes);
      const __m256i h = halfBitsFromFp8(bytes);
      const __m256 lo = lowHalfToFloat(h);
      const __m256 hi = highHalfToFloat(h);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        acc[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i * lda + k), lo, acc[i][j]);
        acc[i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i * lda + k + 8), hi, acc[i][j]);
      }
    }
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR * NB; ++i) out[(i / NB) * ldo + i % NB] = hsum(acc[i / NB][i % NB]);
  return sawNan(nan);
}

// MR x NB accumulators + NB decoded... within 16 ymm registers.
constexpr int nbFor(int mr) { return mr == 1 ? 4 : mr == 2 ? 3 : 2; }
constexpr int kStreamMr = 4;

using StreamTileFn = bool (*)(const float*, int64_t, const uint8_t*, int64_t, int64_t, float*, int64_t);

template <int MR>
StreamTileFn streamTileFn(int nb) {
  switch (nb) {
    case 1: return streamTile<MR, 1>;
    case 2: return streamTile<MR, (nbFor(MR) >= 2 ? 2 : 1)>;
    case 3: return streamTile<MR, (nbFor(MR) >= 3 ? 3 : 1)>;
    default: return streamTile<MR, (nbFor(MR) >= 4 ? 4 : 1)>;
  }
}

StreamTileFn pickStreamTile(int mr, int nb) {
  switch (mr) {
    case 1: return streamTileFn<1>(nb);
    case 2: return streamTileFn<2>(nb);
    case 3: return streamTileFn<3>(nb);
    default: return streamTileFn<4>(nb);
  }
}

bool streamRows(const float* a, int64_t lda, int64_t rows, const uint8_t* b, int64_t ldb, int64_t nRows,
                int64_t K, float* out, int64_t ldo) {
  bool nan = false;
  const int64_t mBlocks = (rows + kStreamMr - 1) / kStreamMr;  // near-equal blocks of <= kStreamMr rows
  for (int64_t jb = 0; jb < nRows;) {
    // One block of B rows for all A blocks, sized by the smallest NB, so the
    // rows decoded for the first A block are still in L1 for the others.
    int64_t nb = nRows - jb;
    for (int64_t ib = 0; ib < mBlocks; ++ib) {
      const int mr = static_cast<int>(rows * (ib + 1) / mBlocks - rows * ib / mBlocks);
      if (nbFor(mr) < nb) nb = nbFor(mr);
    }
    for (int64_t ib = 0; ib < mBlocks; ++ib) {
      const int64_t i0 = rows * ib / mBlocks;
      const int mr = static_cast<int>(rows * (ib + 1) / mBlocks - i0);
      nan |= pickStreamTile(mr, static_cast<int>(nb))(a + i0 * lda, lda, b + jb * ldb, ldb, K,
                                                       out + i0 * ldo + jb, ldo);
    }
    jb += nb;
  }
  return nan;
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
