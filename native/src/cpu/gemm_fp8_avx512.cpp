// AVX-512 kernels of the fp8 GEMM (see gemm_fp8_kernels.h for the contracts).
//
// Headers come first, the target pragma after them: functions defined in
// headers (inline, templates) then keep the baseline target, so the linker can
// never pick an AVX-512 copy of them for code that runs on older CPUs.
// Everything below the pragma has internal linkage except the KernelSet.
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_fp8_kernels.h"

#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12's AVX-512 intrinsics self-initialize their "undefined" operands,
// which -Wall reports at every inlined call site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu/bf16_round_avx512.h"  // after the target pragma

namespace moe::cpu::fp8gemm {
namespace {

// Micro-tile 14 x 32: 28 zmm accumulators + 2 B vectors; A is broadcast
// straight from memory. Per k: 28 FMAs (14 cycles on 2 FMA ports) against
// 2 + 14 loads, so the loads (2-3 ports) are not the limit.
constexpr int kMr = 14;
constexpr int kNr = 32;

// ---- fp8 decode -------------------------------------------------------------
//
// An e4m3 byte s.eeee.mmm maps exactly onto the f16 s.0eeee.mmm0000000, whose
// value is the fp8 value / 256 (exponent bias 15 vs 7), subnormals included:
// sign-extend the byte to 16 bits, shift left 7 (bits 15 and 14 both get the
// sign), clear bit 14. vcvtph2ps then gives f32; the 256 is folded into the
// scale. NaN codes decode to +-480 (finite), so they are caught on the bytes:
// (b | 0x80) == 0xFF exactly for 0x7F/0xFF, tracked with an unsigned max.

inline __m512i halfBitsFromFp8(__m256i bytes) {
  const __m512i words = _mm512_cvtepi8_epi16(bytes);
  return _mm512_and_si512(_mm512_slli_epi16(words, 7), _mm512_set1_epi16(static_cast<short>(0xBFFF)));
}

inline __m256i halfBitsFromFp8(__m128i bytes) {
  const __m256i words = _mm256_cvtepi8_epi16(bytes);
  return _mm256_and_si256(_mm256_slli_epi16(words, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
}

inline __m256i trackNan(__m256i acc, __m256i bytes) {
  return _mm256_max_epu8(acc, _mm256_or_si256(bytes, _mm256_set1_epi8(static_cast<char>(0x80))));
}

inline __m128i trackNan(__m128i acc, __m128i bytes) {
  return _mm_max_epu8(acc, _mm_or_si128(bytes, _mm_set1_epi8(static_cast<char>(0x80))));
}

inline bool sawNan(__m256i acc) {
  return _mm256_movemask_epi8(_mm256_cmpeq_epi8(acc, _mm256_set1_epi8(-1))) != 0;
}

inline bool sawNan(__m128i acc) { return _mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_set1_epi8(-1))) != 0; }

constexpr float kHalfUnit = 256.0f;  // decoded f16 = fp8 / 256

// ---- packing ----------------------------------------------------------------

bool packA(const uint8_t* src, int64_t lds, const float* scales, int64_t ldScales, int64_t rows,
           int64_t k0, int64_t kc, float* dst, int64_t ldd) {
  __m256i nan = _mm256_setzero_si256();
  __m128i nan16 = _mm_setzero_si128();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = src + r * lds + k0;
    const float* scaleRow = scales + r * ldScales;
    float* out = dst + r * ldd;
    int64_t k = 0;
    for (; k + 32 <= kc; k += 32) {  // 32 | 128: one scale per chunk
      const __m512 scale = _mm512_set1_ps(scaleRow[(k0 + k) >> 7] * kHalfUnit);
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + k));
      nan = trackNan(nan, bytes);
      const __m512i h = halfBitsFromFp8(bytes);
      _mm512_storeu_ps(out + k, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), scale));
      _mm512_storeu_ps(out + k + 16, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), scale));
    }
    if (k < kc) {  // a last 16
      const __m512 scale = _mm512_set1_ps(scaleRow[(k0 + k) >> 7] * kHalfUnit);
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k));
      nan16 = trackNan(nan16, bytes);
      _mm512_storeu_ps(out + k, _mm512_mul_ps(_mm512_cvtph_ps(halfBitsFromFp8(bytes)), scale));
    }
  }
  return sawNan(nan) || sawNan(nan16);
}

// In-lane 16x16 byte transpose of x[0..15] (each 128-bit lane separately):
// on return x[j] lane l holds byte j of the 16 input rows of lane l.
inline void transpose16x16Bytes(__m256i x[16]) {
  __m256i a[16], b[16], c[16];
  for (int p = 0; p < 8; ++p) {  // a[2p + h]: rows 2p, 2p+1; bytes 8h .. 8h+7 as 16-bit pairs
    a[2 * p] = _mm256_unpacklo_epi8(x[2 * p], x[2 * p + 1]);
    a[2 * p + 1] = _mm256_unpackhi_epi8(x[2 * p], x[2 * p + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // b[4q + s]: rows 4q .. 4q+3; bytes 4s .. 4s+3 as 32-bit quads
    for (int h = 0; h < 2; ++h) {
      b[4 * q + 2 * h] = _mm256_unpacklo_epi16(a[4 * q + h], a[4 * q + 2 + h]);
      b[4 * q + 2 * h + 1] = _mm256_unpackhi_epi16(a[4 * q + h], a[4 * q + 2 + h]);
    }
  }
  for (int u = 0; u < 2; ++u) {  // c[8u + t]: rows 8u .. 8u+7; bytes 2t, 2t+1 as 64-bit octets
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

// 32 rows x 16 k per step: rows r and r+16 share a ymm (one per lane), one
// in-lane transpose turns them into 16 vectors of 32 bytes = the 32 columns of
// one k, which decode to the two zmm of dst[k, 0..31].
bool packB(const uint8_t* src, int64_t lds, const float* scaleRow, int64_t rows, int64_t k0, int64_t kc,
           float* dst) {
  __m256i nan = _mm256_setzero_si256();
  for (int64_t k = 0; k < kc; k += 16) {
    __m256i x[16];
    for (int r = 0; r < 16; ++r) {
      const __m128i lo = r < rows ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + r * lds + k0 + k))
                                  : _mm_setzero_si128();
      const __m128i hi = r + 16 < rows
                             ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (r + 16) * lds + k0 + k))
                             : _mm_setzero_si128();
      x[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
      nan = trackNan(nan, x[r]);
    }
    transpose16x16Bytes(x);
    const __m512 scale = _mm512_set1_ps(scaleRow[(k0 + k) >> 7] * kHalfUnit);
    float* out = dst + k * kNr;
    for (int j = 0; j < 16; ++j) {
      const __m512i h = halfBitsFromFp8(x[j]);
      _mm512_store_ps(out + j * kNr, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), scale));
      _mm512_store_ps(out + j * kNr + 16, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), scale));
    }
  }
  return sawNan(nan);
}

// ---- microkernel ------------------------------------------------------------

template <int MR>
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate, TileOut out,
           void* d, int64_t ldd) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    c0[i] = c1[i] = _mm512_setzero_ps();
    // The C tile is cold (it lives in L2/L3 between K blocks): start fetching
    // it now so it has arrived when the kc FMAs are done.
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b + k * kNr);
    const __m512 b1 = _mm512_load_ps(b + k * kNr + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * kKc + k]);
      c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      c0[i] = _mm512_add_ps(c0[i], _mm512_loadu_ps(row));
      c1[i] = _mm512_add_ps(c1[i], _mm512_loadu_ps(row + 16));
    }
    if (out == TileOut::kAccumulator) {
      _mm512_storeu_ps(row, c0[i]);
      _mm512_storeu_ps(row + 16, c1[i]);
    } else if (out == TileOut::kF32) {
      float* dRow = static_cast<float*>(d) + i * ldd;
      _mm512_storeu_ps(dRow, c0[i]);
      _mm512_storeu_ps(dRow + 16, c1[i]);
    } else {
      uint16_t* dRow = static_cast<uint16_t*>(d) + i * ldd;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dRow), bf16FromFloat16(c0[i]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dRow + 16), bf16FromFloat16(c1[i]));
    }
  }
}

// ---- small-M streaming --------------------------------------------------------

void scaleForStream(const float* src, int64_t rows, int64_t K, int64_t ld, const float* scaleRow, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < K; k += 16) {  // 16 | 128
      const __m512 scale = _mm512_set1_ps(scaleRow[k >> 7] * kHalfUnit);
      _mm512_storeu_ps(dst + r * ld + k, _mm512_mul_ps(_mm512_loadu_ps(src + r * ld + k), scale));
    }
  }
}

// MR rows of A against NB rows of B over all of K; lanes run along k and are
// summed at the end. Per 32 k and B row: ~8 uops of decode on the FMA ports
// plus MR x 2 FMAs, so at M = 1 the decode sets the speed: ~9-14 GB/s of B
// per core, so two cores saturate DRAM (~13-16 GB/s on the dev VM).
//
// pf: when not null, a region of NB * K bytes (the B rows a tile or two
// ahead, contiguous) fetched over the K loop, NB * 32 bytes per step: short
// rows (K <= 2048) are too short-lived streams for the hardware prefetchers.
template <int MR, int NB>
bool streamTile(const float* a, int64_t lda, const uint8_t* b, int64_t ldb, int64_t K, float* out, int64_t ldo,
                const uint8_t* pf) {
  __m512 acc[MR][NB];
#pragma GCC unroll 64
  for (int i = 0; i < MR * NB; ++i) acc[i / NB][i % NB] = _mm512_setzero_ps();
  __m256i nan = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    if (pf != nullptr) {
#pragma GCC unroll 8
      for (int i = 0; i < (NB + 1) / 2; ++i) _mm_prefetch(reinterpret_cast<const char*>(pf + k * NB + 64 * i), _MM_HINT_T0);
    }
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j * ldb + k));
      nan = trackNan(nan, bytes);
      const __m512i h = halfBitsFromFp8(bytes);
      const __m512 lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
      const __m512 hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i * lda + k), lo, acc[i][j]);
        acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i * lda + k + 16), hi, acc[i][j]);
      }
    }
  }
  if (k < K) {  // a last 16
    __m128i nan16 = _mm_setzero_si128();
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + j * ldb + k));
      nan16 = trackNan(nan16, bytes);
      const __m512 v = _mm512_cvtph_ps(halfBitsFromFp8(bytes));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i * lda + k), v, acc[i][j]);
    }
    if (sawNan(nan16)) return true;
  }
#pragma GCC unroll 64
  for (int i = 0; i < MR * NB; ++i) out[(i / NB) * ldo + i % NB] = _mm512_reduce_add_ps(acc[i / NB][i % NB]);
  return sawNan(nan);
}

// B rows per tile for MR rows of A: enough independent accumulators to hide
// the FMA latency at MR = 1, and MR x NB + NB + MR within 32 registers.
constexpr int nbFor(int mr) { return mr == 1 ? 8 : mr == 2 ? 6 : mr <= 4 ? 4 : mr <= 6 ? 3 : 2; }
constexpr int kStreamMr = 8;

using StreamTileFn = bool (*)(const float*, int64_t, const uint8_t*, int64_t, int64_t, float*, int64_t,
                              const uint8_t*);

template <int MR>
StreamTileFn streamTileFn(int nb) {
  switch (nb) {
    case 1: return streamTile<MR, 1>;
    case 2: return streamTile<MR, (nbFor(MR) >= 2 ? 2 : 1)>;
    case 3: return streamTile<MR, (nbFor(MR) >= 3 ? 3 : 1)>;
    case 4: return streamTile<MR, (nbFor(MR) >= 4 ? 4 : 1)>;
    case 5: return streamTile<MR, (nbFor(MR) >= 5 ? 5 : 1)>;
    case 6: return streamTile<MR, (nbFor(MR) >= 6 ? 6 : 1)>;
    case 7: return streamTile<MR, (nbFor(MR) >= 7 ? 7 : 1)>;
    default: return streamTile<MR, (nbFor(MR) >= 8 ? 8 : 1)>;
  }
}

StreamTileFn pickStreamTile(int mr, int nb) {
  switch (mr) {
    case 1: return streamTileFn<1>(nb);
    case 2: return streamTileFn<2>(nb);
    case 3: return streamTileFn<3>(nb);
    case 4: return streamTileFn<4>(nb);
    case 5: return streamTileFn<5>(nb);
    case 6: return streamTileFn<6>(nb);
    case 7: return streamTileFn<7>(nb);
    default: return streamTileFn<8>(nb);
  }
}

constexpr int64_t kPrefetchBytes = 8192;

bool streamRows(const float* a, int64_t lda, int64_t rows, const uint8_t* b, int64_t ldb, int64_t nRows,
                int64_t K, float* out, int64_t ldo) {
  bool nan = false;
  // Split the A rows into near-equal blocks of at most kStreamMr.
  const int64_t mBlocks = (rows + kStreamMr - 1) / kStreamMr;
  for (int64_t jb = 0; jb < nRows;) {
    // One B row block for all A blocks, sized by the smallest NB so rows
    // decoded for the first A block are still in L1 for the others.
    int64_t nb = nRows - jb;
    for (int64_t ib = 0; ib < mBlocks; ++ib) {
      const int mr = static_cast<int>(rows * (ib + 1) / mBlocks - rows * ib / mBlocks);
      if (nbFor(mr) < nb) nb = nbFor(mr);
    }
    // Short contiguous rows: prefetch the rows kPrefetchBytes ahead.
    const uint8_t* pf = nullptr;
    if (ldb == K && K <= 2048) pf = b + jb * ldb + ((kPrefetchBytes + nb * K - 1) / (nb * K)) * nb * K;
    for (int64_t ib = 0; ib < mBlocks; ++ib) {
      const int64_t i0 = rows * ib / mBlocks;
      const int mr = static_cast<int>(rows * (ib + 1) / mBlocks - i0);
      nan |= pickStreamTile(mr, static_cast<int>(nb))(a + i0 * lda, lda, b + jb * ldb, ldb, K, out + i0 * ldo + jb, ldo,
                                                      ib == 0 ? pf : nullptr);
    }
    jb += nb;
  }
  return nan;
}

// ---- output -----------------------------------------------------------------

void storeTile(const float* c, int64_t ldc, int64_t rows, int64_t cols, void* d, int64_t ldd, bool bf16) {
  const int64_t tail = cols % 16;
  const __mmask16 tailMask = static_cast<__mmask16>((1u << tail) - 1u);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = c + r * ldc;
    if (bf16) {
      uint16_t* out = static_cast<uint16_t*>(d) + r * ldd;
      int64_t j = 0;
      for (; j + 16 <= cols; j += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), bf16FromFloat16(_mm512_loadu_ps(in + j)));
      if (tail) _mm256_mask_storeu_epi16(out + j, tailMask, bf16FromFloat16(_mm512_maskz_loadu_ps(tailMask, in + j)));
    } else {
      float* out = static_cast<float*>(d) + r * ldd;
      int64_t j = 0;
      for (; j + 16 <= cols; j += 16) _mm512_storeu_ps(out + j, _mm512_loadu_ps(in + j));
      if (tail) _mm512_mask_storeu_ps(out + j, tailMask, _mm512_maskz_loadu_ps(tailMask, in + j));
    }
  }
}

// ---- peak probe -------------------------------------------------------------

// 24 independent chains: 2 ports x 4 cycles latency needs >= 8; more keeps the
// probe honest if the FMA latency is higher under the hypervisor.
double fmaBurn(int64_t iters, float* sink) {
  constexpr int kChains = 24;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 0.01f * i);
  const __m512 x = _mm512_set1_ps(0.999f);
  const __m512 y = _mm512_set1_ps(0.001f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  *sink = _mm512_reduce_add_ps(sum);
  return static_cast<double>(iters) * kChains * 16 * 2;
}

}  // namespace

extern const KernelSet kAvx512Kernels = {
    "avx512",
    kMr,
    kNr,
    8,  // streamMaxM: streaming decodes B once per 8 rows of A (gemm_fp8.cpp)
    packA,
    packB,
    {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>, micro<7>, micro<8>, micro<9>,
     micro<10>, micro<11>, micro<12>, micro<13>, micro<14>, nullptr, nullptr},
    scaleForStream,
    streamRows,
    storeTile,
    fmaBurn,
};

}  // namespace moe::cpu::fp8gemm
