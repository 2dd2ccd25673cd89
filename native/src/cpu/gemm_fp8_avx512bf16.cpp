// AVX512_BF16 kernels of the fp8 GEMM (see gemm_fp8_kernels.h for the
// contracts and the scale promotion; gemm_fp8_bf16.cpp for the blocking and
// threading).
//
// As in gemm_fp8_avx512.cpp, headers come first and the target pragma after
// them; everything below it has internal linkage except the Bf16KernelSet,
// which is constant-initialized (no code runs at load time) and called only
// when gemmUsesAvx512Bf16().
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/gemm_fp8_kernels.h"

#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu/bf16_round_avx512.h"      // after the target pragma
#include "cpu/fp8_bf16_x64.h"           // the same
#include "cpu/transpose16x16_avx512.h"  // the same

namespace moe::cpu::fp8gemm {
namespace {

constexpr int64_t kPairsPerGroup = kBf16Group / 2;

// Bytes [k, k + 64) of a row whose valid length is K; bytes at or past K read
// as zero (masked load: nothing past the row is touched).
inline __m512i loadRow64(const uint8_t* row, int64_t k, int64_t K) {
  if (k + 64 <= K) return _mm512_loadu_si512(row + k);
  if (k >= K) return _mm512_setzero_si512();
  return _mm512_maskz_loadu_epi8((__mmask64(1) << (K - k)) - 1, row + k);
}

inline __m512bh asBf16(__m512i v) { return reinterpret_cast<__m512bh&>(v); }
inline __m512bh asBf16(__m512 v) { return reinterpret_cast<__m512bh&>(v); }

// ---- packing ----------------------------------------------------------------

bool packA(const uint8_t* a, const int32_t* aRows, int64_t m0, int64_t rows, int64_t K, int64_t ldd, uint16_t* dst) {
  __m512i nan = _mm512_setzero_si512();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = a + (aRows != nullptr ? aRows[m0 + r] : m0 + r) * K;
    uint16_t* out = dst + r * ldd;
    for (int64_t k = 0; k < ldd; k += 64) {
      const __m512i bytes = loadRow64(src, k, K);
      nan = trackNan64(nan, bytes);  // zeros (past K) never look like NaN
      bf16FromFp8x64(bytes, out + k);
    }
  }
  return sawNan64(nan);
}

// The permutation that makes bf16FromPermutedFp8x64 split 64 bytes holding
// 16 rows x 2 k-pairs (row r: bytes 4r .. 4r + 3) into lo = the first pair of
// every row, hi = the second (16 dwords each, row r in dword r).
constexpr struct PairSplitOrder {
  uint8_t idx[64];
  constexpr PairSplitOrder() : idx{} {
    for (int p = 0; p < 64; ++p) {
      const int lane = p / 16, j = p % 16;
      const int w = 8 * lane + (j % 8);                  // the output word: row w / 2, byte w % 2 of its pair
      idx[p] = static_cast<uint8_t>(4 * (w / 2) + (j < 8 ? 0 : 2) + w % 2);
    }
  }
} kPairSplitOrder;

// 16 rows x 64 k per step: a 16 x 16 dword transpose of the raw fp8 bytes
// (dword q of every row: k 4q .. 4q + 3) and one decode per dword column,
// whose byte permutation also separates its two k-pairs: half the shuffles
// of transposing after the decode (bf16 is twice the bytes).
bool packB(const uint8_t* b, int64_t K, int64_t rows, int64_t k0, int64_t kc, uint32_t* dst) {
  __m512i nan = _mm512_setzero_si512();
  const __m512i order = _mm512_loadu_si512(kPairSplitOrder.idx);
  for (int h = 0; h < 2; ++h) {
    for (int64_t k = 0; k < kc; k += 64) {
      __m512 x[16];
      for (int r = 0; r < 16; ++r) {
        const int64_t row = 16 * h + r;
        const __m512i bytes = row < rows ? loadRow64(b + row * K, k0 + k, K) : _mm512_setzero_si512();
        nan = trackNan64(nan, bytes);
        x[r] = _mm512_castsi512_ps(bytes);
      }
      transpose16x16(x);  // x[q]: k 4q .. 4q + 3 of the 16 rows
      uint32_t* out = dst + (k / 2) * kBf16Nr + 16 * h;
      for (int q = 0; q < 16; ++q) {
        __m512i first, second;
        bf16FromPermutedFp8x64(_mm512_permutexvar_epi8(order, _mm512_castps_si512(x[q])), first, second);
        _mm512_store_si512(out + (2 * q) * kBf16Nr, first);
        _mm512_store_si512(out + (2 * q + 1) * kBf16Nr, second);
      }
    }
  }
  return sawNan64(nan);
}

// ---- panel microkernel ----------------------------------------------------------

// MR x 32 tile: per k-pair 2 panel loads, MR broadcasts of A's pair and
// 2 x MR VDPBF16PS into the group's partial sums p0/p1; at each group's end
// the partials are promoted into f0/f1 with sa[i, g] * sb[g].
template <int MR>
void micro(int64_t kc, const uint16_t* a, int64_t lda, const uint32_t* b, const float* sa, int64_t ldsa,
           const float* sb, float* c, int64_t ldc, bool accumulate, TileOut out, void* d, int64_t ldd) {
  __m512 f0[MR], f1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    f0[i] = f1[i] = _mm512_setzero_ps();
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
  const int64_t groups = kc / kBf16Group;
  for (int64_t g = 0; g < groups; ++g) {
    __m512 p0[MR], p1[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) p0[i] = p1[i] = _mm512_setzero_ps();
    const uint32_t* bg = b + g * kPairsPerGroup * kBf16Nr;
    const uint16_t* ag = a + g * kBf16Group;
    for (int64_t kp = 0; kp < kPairsPerGroup; ++kp) {
      const __m512bh b0 = asBf16(_mm512_load_si512(bg + kp * kBf16Nr));
      const __m512bh b1 = asBf16(_mm512_load_si512(bg + kp * kBf16Nr + 16));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        int32_t pair;
        std::memcpy(&pair, ag + i * lda + 2 * kp, 4);
        const __m512bh av = asBf16(_mm512_set1_epi32(pair));
        p0[i] = _mm512_dpbf16_ps(p0[i], av, b0);
        p1[i] = _mm512_dpbf16_ps(p1[i], av, b1);
      }
    }
    const __m512 sbv = _mm512_set1_ps(sb[g]);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 s = _mm512_mul_ps(_mm512_set1_ps(sa[i * ldsa + g]), sbv);
      f0[i] = _mm512_fmadd_ps(p0[i], s, f0[i]);
      f1[i] = _mm512_fmadd_ps(p1[i], s, f1[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    if (accumulate) {
      f0[i] = _mm512_add_ps(f0[i], _mm512_loadu_ps(row));
      f1[i] = _mm512_add_ps(f1[i], _mm512_loadu_ps(row + 16));
    }
    if (out == TileOut::kAccumulator) {
      _mm512_storeu_ps(row, f0[i]);
      _mm512_storeu_ps(row + 16, f1[i]);
    } else if (out == TileOut::kF32) {
      float* dRow = static_cast<float*>(d) + i * ldd;
      _mm512_storeu_ps(dRow, f0[i]);
      _mm512_storeu_ps(dRow + 16, f1[i]);
    } else {
      uint16_t* dRow = static_cast<uint16_t*>(d) + i * ldd;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dRow), bf16FromFloat16(f0[i]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dRow + 16), bf16FromFloat16(f1[i]));
    }
  }
}

// ---- dot kernel (small M) -------------------------------------------------------

// MR rows of A against NB rows of B over all of K, lanes along k. Per 64 B
// bytes: one load, ~8 uops of decode shared by the MR rows, 2 VDPBF16PS per
// row; per group and (row, B row) one promotion FMA.
//
// B's rows are contiguous, so a task reads one region in NB parallel streams.
// Each 64-byte load prefetches the line `ahead` bytes further: with long rows
// 8 KiB / NB further along its own row (the streams together keep ~8 KiB in
// flight); with short rows (K < 4096: streams too short-lived for the hardware
// prefetchers) the same place in the tile(s) far enough ahead to be 8 KiB on.
template <int MR, int NB>
bool dotTile(const uint16_t* a, int64_t lda, const float* sa, int64_t ldsa, const uint8_t* b, int64_t K,
             const float* sb, float* out, int64_t ldo) {
  const int64_t ahead = K >= 4096 ? 8192 / NB : NB * K * ((8192 + NB * K - 1) / (NB * K));
  __m512 fin[MR][NB];
#pragma GCC unroll 16
  for (int x = 0; x < MR * NB; ++x) fin[x / NB][x % NB] = _mm512_setzero_ps();
  __m512i nan = _mm512_setzero_si512();
  const int64_t groups = (K + kBf16Group - 1) / kBf16Group;
  for (int64_t g = 0; g < groups; ++g) {
    __m512 par[MR][NB];
#pragma GCC unroll 16
    for (int x = 0; x < MR * NB; ++x) par[x / NB][x % NB] = _mm512_setzero_ps();
    for (int64_t k = g * kBf16Group; k < (g + 1) * kBf16Group && k < K; k += 64) {
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) {
        const uint8_t* row = b + j * K;
        _mm_prefetch(reinterpret_cast<const char*>(row + k + ahead), _MM_HINT_T0);
        const __m512i bytes = loadRow64(row, k, K);
        nan = trackNan64(nan, bytes);
        __m512i lo, hi;
        bf16FromFp8x64(bytes, lo, hi);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          const uint16_t* ar = a + i * lda + k;
          par[i][j] = _mm512_dpbf16_ps(par[i][j], asBf16(_mm512_load_si512(ar)), asBf16(lo));
          par[i][j] = _mm512_dpbf16_ps(par[i][j], asBf16(_mm512_load_si512(ar + 32)), asBf16(hi));
        }
      }
    }
    const __m512 sbv = _mm512_set1_ps(sb[g]);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 s = _mm512_mul_ps(_mm512_set1_ps(sa[i * ldsa + g]), sbv);
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) fin[i][j] = _mm512_fmadd_ps(par[i][j], s, fin[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int x = 0; x < MR * NB; ++x) out[(x / NB) * ldo + x % NB] = _mm512_reduce_add_ps(fin[x / NB][x % NB]);
  return sawNan64(nan);
}

// B rows per tile for MR rows of A: MR x NB partial + MR x NB promoted
// accumulators, two decoded vectors and the decode's five constants within
// the 32 zmm registers; NB > 1 also keeps NB independent load streams.
constexpr int nbFor(int mr) { return mr == 1 ? 8 : mr == 2 ? 4 : mr == 3 ? 3 : 2; }

using DotTileFn = bool (*)(const uint16_t*, int64_t, const float*, int64_t, const uint8_t*, int64_t, const float*,
                           float*, int64_t);

template <int MR>
DotTileFn dotTileFn(int nb) {
  switch (nb) {
    case 1: return dotTile<MR, 1>;
    case 2: return dotTile<MR, (nbFor(MR) >= 2 ? 2 : 1)>;
    case 3: return dotTile<MR, (nbFor(MR) >= 3 ? 3 : 1)>;
    case 4: return dotTile<MR, (nbFor(MR) >= 4 ? 4 : 1)>;
    case 5: return dotTile<MR, (nbFor(MR) >= 5 ? 5 : 1)>;
    case 6: return dotTile<MR, (nbFor(MR) >= 6 ? 6 : 1)>;
    case 7: return dotTile<MR, (nbFor(MR) >= 7 ? 7 : 1)>;
    default: return dotTile<MR, (nbFor(MR) >= 8 ? 8 : 1)>;
  }
}

DotTileFn pickDotTile(int mr, int nb) {
  switch (mr) {
    case 1: return dotTileFn<1>(nb);
    case 2: return dotTileFn<2>(nb);
    case 3: return dotTileFn<3>(nb);
    default: return dotTileFn<4>(nb);
  }
}

static_assert(kBf16DotMaxM == 4, "pickDotTile instantiates MR = 1 .. 4");

bool dotRows(const uint16_t* a, int64_t lda, int64_t rows, const float* sa, int64_t ldsa, const uint8_t* b, int64_t K,
             int64_t nRows, const float* sb, float* out, int64_t ldo) {
  bool nan = false;
  const int mr = static_cast<int>(rows);
  for (int64_t j = 0; j < nRows;) {
    const int nb = static_cast<int>(nRows - j < nbFor(mr) ? nRows - j : nbFor(mr));
    nan |= pickDotTile(mr, nb)(a, lda, sa, ldsa, b + j * K, K, sb, out + j, ldo);
    j += nb;
  }
  return nan;
}

// ---- blocked dot kernel (mid M) ------------------------------------------------

// Lanes along k as in dotTile, but B's rows are decoded once per block of
// kBf16DotSub rows x kBf16Kc into bf16 in L1 and reused by every row of A.
// Decoding 64 bytes costs about as much as 5 VDPBF16PS: the streaming kernel
// decodes once per MR <= 4 rows, the panel kernel also transposes, so from a
// few rows up to ~16 this kernel does the least work per product.
//
// An MR x NB register tile per 32-pair chunk: MR + NB loads and MR x NB
// VDPBF16PS into the group's partial sums (24 independent chains cover the
// instruction's latency of ~12 at 2 per cycle). At each group's end the
// partials are promoted into fin, which stays in memory ([rows][kBf16DotSub]
// [16] f32, in L1): one load + FMA + store per 4 x MR x NB products, the cost
// of lanes along k (the panel kernel promotes once per 64 k-pairs) and what
// keeps it from the larger M.
//
// Per output element the operations and their order are dotTile's (chunks of
// 32 k in order, promotion per group, one horizontal sum at the end).
constexpr int kBlockMr = 4, kBlockNb = 6;  // 24 partials + 4 A + 1 B of the 32 zmm

template <int MR, int NB>
void dotBlockTile(int64_t kc, const uint16_t* a, int64_t lda, const float* sa, int64_t ldsa, const uint16_t* b,
                  const float* sb, float* fin, bool first) {
  for (int64_t g = 0; g < kc / kBf16Group; ++g) {
    __m512 par[MR][NB];
#pragma GCC unroll 32
    for (int x = 0; x < MR * NB; ++x) par[x / NB][x % NB] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int64_t k = g * kBf16Group; k < (g + 1) * kBf16Group; k += 32) {
      __m512bh av[MR];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) av[i] = asBf16(_mm512_load_si512(a + i * lda + k));
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) {
        const __m512bh bv = asBf16(_mm512_load_si512(b + j * kc + k));
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) par[i][j] = _mm512_dpbf16_ps(par[i][j], av[i], bv);
      }
    }
    const __m512 sbv = _mm512_set1_ps(sb[g]);
    const bool zero = first && g == 0;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 s = _mm512_mul_ps(_mm512_set1_ps(sa[i * ldsa + g]), sbv);
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) {
        float* f = fin + (i * kBf16DotSub + j) * 16;
        _mm512_store_ps(f, _mm512_fmadd_ps(par[i][j], s, zero ? _mm512_setzero_ps() : _mm512_load_ps(f)));
      }
    }
  }
}

using DotBlockTileFn = void (*)(int64_t, const uint16_t*, int64_t, const float*, int64_t, const uint16_t*, const float*,
                                float*, bool);

template <int MR>
DotBlockTileFn dotBlockTileFn(int nb) {
  switch (nb) {
    case 1: return dotBlockTile<MR, 1>;
    case 2: return dotBlockTile<MR, 2>;
    case 3: return dotBlockTile<MR, 3>;
    case 4: return dotBlockTile<MR, 4>;
    case 5: return dotBlockTile<MR, 5>;
    default: return dotBlockTile<MR, 6>;
  }
}

DotBlockTileFn pickDotBlockTile(int mr, int nb) {
  return mr == 1 ? dotBlockTileFn<1>(nb) : mr == 2 ? dotBlockTileFn<2>(nb) : mr == 3 ? dotBlockTileFn<3>(nb)
                                                                                      : dotBlockTileFn<4>(nb);
}


static_assert(kBlockMr == 4 && kBlockNb == 6, "pickDotBlockTile instantiates MR = 1 .. 4, NB = 1 .. 6");
static_assert(kBf16DotSub % kBlockNb == 0, "a full block of B rows is whole NB tiles");

bool dotBlocked(const uint16_t* a, int64_t lda, int64_t rows, const float* sa, int64_t ldsa, const uint8_t* b,
                int64_t K, int64_t nRows, const float* sb, float* out, int64_t ldo, void* scratch) {
  __m512i nan = _mm512_setzero_si512();
  auto* bb = static_cast<uint16_t*>(scratch);                    // [kBf16DotSub, kc] bf16
  float* fin = static_cast<float*>(scratch) + kBf16DotSub * kBf16Kc / 2;  // [rows, kBf16DotSub, 16] f32
  for (int64_t s0 = 0; s0 < nRows; s0 += kBf16DotSub) {
    const int64_t ns = nRows - s0 < kBf16DotSub ? nRows - s0 : kBf16DotSub;
    for (int64_t k0 = 0; k0 < lda; k0 += kBf16Kc) {
      const int64_t kc = lda - k0 < kBf16Kc ? lda - k0 : kBf16Kc;
      // Each line decoded prefetches its counterpart in the next block (the
      // same rows' next K block, or the next rows' first): the block's
      // compute hides the memory latency.
      const bool lastK = k0 + kc >= lda;
      for (int64_t r = 0; r < ns; ++r) {
        const uint8_t* row = b + (s0 + r) * K;
        const int64_t nextRow = lastK ? s0 + kBf16DotSub + r : s0 + r;
        const uint8_t* next = nextRow < nRows ? b + nextRow * K + (lastK ? 0 : k0 + kc) : nullptr;
        const int64_t nextLen = next == nullptr ? 0 : (lastK ? K : K - k0 - kc);
        for (int64_t k = 0; k < kc; k += 64) {
          if (k < nextLen) _mm_prefetch(reinterpret_cast<const char*>(next + k), _MM_HINT_T0);
          const __m512i bytes = loadRow64(row, k0 + k, K);
          nan = trackNan64(nan, bytes);
          bf16FromFp8x64(bytes, bb + r * kc + k);
        }
      }
      for (int64_t i0 = 0; i0 < rows; i0 += kBlockMr) {
        const int mr = static_cast<int>(rows - i0 < kBlockMr ? rows - i0 : kBlockMr);
        for (int64_t j0 = 0; j0 < ns; j0 += kBlockNb) {
          const int nb = static_cast<int>(ns - j0 < kBlockNb ? ns - j0 : kBlockNb);
          pickDotBlockTile(mr, nb)(kc, a + i0 * lda + k0, lda, sa + i0 * ldsa + k0 / kBf16Group, ldsa, bb + j0 * kc,
                                   sb + k0 / kBf16Group, fin + (i0 * kBf16DotSub + j0) * 16, k0 == 0);
        }
      }
    }
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < ns; ++j)
        out[i * ldo + s0 + j] = _mm512_reduce_add_ps(_mm512_load_ps(fin + (i * kBf16DotSub + j) * 16));
  }
  return sawNan64(nan);
}

// ---- peak probe -------------------------------------------------------------

// 24 independent chains (latency ~6 cycles x 2 ports needs >= 12).
double dotBurn(int64_t iters, float* sink) {
  constexpr int kChains = 24;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.01f * i);
  const __m512bh x = asBf16(_mm512_set1_epi16(0x3F80));  // 1.0
  const __m512bh y = asBf16(_mm512_set1_epi16(0x3A83));  // ~0.001
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  *sink = _mm512_reduce_add_ps(sum);
  return static_cast<double>(iters) * kChains * 16 * 4;
}

}  // namespace

extern const Bf16KernelSet kAvx512Bf16Kernels = {
    packA,
    packB,
    {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>},
    dotRows,
    dotBlocked,
    dotBurn,
};

static_assert(kBf16Mr == 6, "kAvx512Bf16Kernels.micro lists MR = 1 .. 6");

}  // namespace moe::cpu::fp8gemm
