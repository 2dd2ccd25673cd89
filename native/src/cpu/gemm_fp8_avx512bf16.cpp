// AVX512_BF16 kernels of the fp8 GEMM (see gemm_fp8_kernels.h for the
// contracts and the scale promotion; gemm_fp8_bf16.cpp for the blocking and
// threading).
//
// As in gemm_fp8_avx512.cpp, headers come first and the target pragma after
// them; everything below it has internal linkage except the Bf16KernelSet,
// which is constant-initialized (no code runs at load time) and called only
// when gemmUsesAvx512Bf16().
#include <immintrin.h>

#include <algorithm>
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
// of transposing after the decode (bf16 is twice the bytes). NaN codes are
// caught off the decode's high bytes (one op per 64 values, not two per
// row loaded).
bool packB(const uint8_t* b, int64_t K, int64_t rows, int64_t k0, int64_t kc, uint32_t* dst) {
  const Fp8Bf16Tables t = Fp8Bf16Tables::load();
  __m512i nanHigh = _mm512_setzero_si512();
  const __m512i order = _mm512_loadu_si512(kPairSplitOrder.idx);
  for (int h = 0; h < 2; ++h) {
    for (int64_t k = 0; k < kc; k += 64) {
      __m512 x[16];
      for (int r = 0; r < 16; ++r) {
        const int64_t row = 16 * h + r;
        x[r] = _mm512_castsi512_ps(row < rows ? loadRow64(b + row * K, k0 + k, K) : _mm512_setzero_si512());
      }
      transpose16x16(x);  // x[q]: k 4q .. 4q + 3 of the 16 rows
      uint32_t* out = dst + (k / 2) * kBf16Nr + 16 * h;
      for (int q = 0; q < 16; ++q) {
        __m512i first, second;
        bf16FromPermutedFp8x64(t, _mm512_permutexvar_epi8(order, _mm512_castps_si512(x[q])), first, second, nanHigh);
        _mm512_store_si512(out + (2 * q) * kBf16Nr, first);
        _mm512_store_si512(out + (2 * q + 1) * kBf16Nr, second);
      }
    }
  }
  return sawNanHigh64(nanHigh);
}

// ---- panel microkernel ----------------------------------------------------------

// MR x (16 NV) tile over NV / 2 adjacent panels (b, then b + kc / 2 * 32):
// per k-pair NV panel loads, MR broadcasts of A's pair and MR x NV
// VDPBF16PS into the group's partial sums p; at each group's end the
// partials are promoted into f with sa[i, g] * sb (sb0 for the first panel,
// sb1 for the second: a 64-column tile may straddle two 128-row scale
// blocks). At MR = 4, NV = 4: 16 independent chains (the instruction's
// latency x 2 per cycle needs >= 12; 6 x 2 had exactly 12) and 8 loads per
// 16 VDPBF16PS; f (16 zmm more) lives in L1, touched once per group. A
// single panel (NV = 2) takes up to 8 rows for the same 16 chains.
template <int MR, int NV>
void micro(int64_t kc, const uint16_t* a, int64_t lda, const uint32_t* b, const float* sa, int64_t ldsa,
           const float* sb0, const float* sb1, float* c, int64_t ldc, bool accumulate, TileOut out, void* d,
           int64_t ldd) {
  static_assert(NV == 2 || NV == 4, "one or two panels of 32 columns");
  alignas(64) float f[MR][NV * 16];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; v += 2) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * v), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * v + 16), _MM_HINT_T0);
    }
  }
  const uint32_t* panel[2] = {b, b + kc / 2 * kBf16Nr};
  const int64_t groups = kc / kBf16Group;
  for (int64_t g = 0; g < groups; ++g) {
    __m512 p[MR][NV];
#pragma GCC unroll 16
    for (int x = 0; x < MR * NV; ++x) p[x / NV][x % NV] = _mm512_setzero_ps();
    const uint16_t* ag = a + g * kBf16Group;
#pragma GCC unroll 2
    for (int64_t kp = g * kPairsPerGroup; kp < (g + 1) * kPairsPerGroup; ++kp) {
      __m512bh bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = asBf16(_mm512_load_si512(panel[v / 2] + kp * kBf16Nr + 16 * (v % 2)));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        int32_t pair;
        std::memcpy(&pair, ag + i * lda + 2 * (kp - g * kPairsPerGroup), 4);
        const __m512bh av = asBf16(_mm512_set1_epi32(pair));
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) p[i][v] = _mm512_dpbf16_ps(p[i][v], av, bv[v]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const float sai = sa[i * ldsa + g];
      const __m512 s[2] = {_mm512_set1_ps(sai * sb0[g]), _mm512_set1_ps(sai * sb1[g])};
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* fv = f[i] + 16 * v;
        _mm512_store_ps(fv, _mm512_fmadd_ps(p[i][v], s[v / 2], g == 0 ? _mm512_setzero_ps() : _mm512_load_ps(fv)));
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512 x = _mm512_load_ps(f[i] + 16 * v);
      if (accumulate) x = _mm512_add_ps(x, _mm512_loadu_ps(row + 16 * v));
      if (out == TileOut::kAccumulator) {
        _mm512_storeu_ps(row + 16 * v, x);
      } else if (out == TileOut::kF32) {
        _mm512_storeu_ps(static_cast<float*>(d) + i * ldd + 16 * v, x);
      } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(d) + i * ldd + 16 * v), bf16FromFloat16(x));
      }
    }
  }
}

// ---- dot kernel (small M) -------------------------------------------------------

// MR rows of A against NB rows of B over all of K, lanes along k. Per 64 B
// bytes: one load, ~8 uops of decode shared by the MR rows, 2 VDPBF16PS per
// row; per group and (row, B row) one promotion FMA.
//
// B's rows are contiguous, so a task reads one region in NB parallel streams.
// Each 64-byte load prefetches the line `ahead` bytes further (dotAhead):
// with long rows 8 KiB / NB further along its own row (the streams together
// keep ~8 KiB in flight), and within `ahead` of the row's end the same row of
// the next tile, so that a tile starts warm; with short rows (K < 4096:
// streams too short-lived for the hardware prefetchers) the same place in the
// tile(s) far enough ahead to be 8 KiB on.
constexpr int64_t kDotAheadBytes = 8192;
constexpr int64_t kDotLongRow = 4096;

inline int64_t dotAhead(int64_t K, int nb) {
  return K >= kDotLongRow ? kDotAheadBytes / nb : nb * K * ((kDotAheadBytes + nb * K - 1) / (nb * K));
}

// The promoted sums fin stay in registers for one row of A (8 + 8 zmm); with
// more rows they live in L1 (one load + FMA + store per group and pair,
// ~1/16 of the products), which frees the registers for more B rows per
// tile: 16 (MR = 2 x NB = 8), 15 (3 x 5), 16 (4 x 4) independent chains of
// partial sums instead of 8, 9, 8 (with 8 chains of latency ~6 the
// VDPBF16PS waited on each other). One thread streaming DeepSeek-style
// experts (1024 x 1792) from memory: M = 2 20.8 -> 26.6 GB/s, M = 3
// 18.8 -> 23.3, M = 4 15.6 -> 18.4 (alternating runs; plain reads 27-29).
template <int MR, int NB>
bool dotTile(const uint16_t* a, int64_t lda, const float* sa, int64_t ldsa, const uint8_t* b, int64_t K,
             const float* sb, float* out, int64_t ldo) {
  constexpr bool kFinInRegisters = MR == 1;
  const int64_t ahead = dotAhead(K, NB);
  const int64_t wrap = K >= kDotLongRow ? (NB - 1) * K : 0;  // row j + ahead past its end -> row j + NB
  __m512 fin[kFinInRegisters ? MR * NB : 1];
  alignas(64) float finL1[kFinInRegisters ? 16 : MR * NB * 16];  // [MR * NB][16] f32
#pragma GCC unroll 32
  for (int x = 0; x < MR * NB; ++x) {
    if constexpr (kFinInRegisters) fin[x] = _mm512_setzero_ps();
    else _mm512_store_ps(finL1 + 16 * x, _mm512_setzero_ps());
  }
  const Fp8Bf16LeanTables t = Fp8Bf16LeanTables::load();
  __m512i nanHigh = _mm512_setzero_si512();
  const int64_t groups = (K + kBf16Group - 1) / kBf16Group;
  for (int64_t g = 0; g < groups; ++g) {
    __m512 par[MR][NB];
#pragma GCC unroll 32
    for (int x = 0; x < MR * NB; ++x) par[x / NB][x % NB] = _mm512_setzero_ps();
    for (int64_t k = g * kBf16Group; k < (g + 1) * kBf16Group && k < K; k += 64) {
#pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) {
        const uint8_t* row = b + j * K;
        _mm_prefetch(reinterpret_cast<const char*>(row + k + ahead + (k + ahead >= K ? wrap : 0)), _MM_HINT_T0);
        __m512i lo, hi;
        bf16FromFp8x64Lean(t, loadRow64(row, k, K), lo, hi, nanHigh);
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
      for (int j = 0; j < NB; ++j) {
        if constexpr (kFinInRegisters) {
          fin[i * NB + j] = _mm512_fmadd_ps(par[i][j], s, fin[i * NB + j]);
        } else {
          float* f = finL1 + 16 * (i * NB + j);
          _mm512_store_ps(f, _mm512_fmadd_ps(par[i][j], s, _mm512_load_ps(f)));
        }
      }
    }
  }
#pragma GCC unroll 32
  for (int x = 0; x < MR * NB; ++x) {
    if constexpr (kFinInRegisters) out[(x / NB) * ldo + x % NB] = _mm512_reduce_add_ps(fin[x]);
    else out[(x / NB) * ldo + x % NB] = _mm512_reduce_add_ps(_mm512_load_ps(finL1 + 16 * x));
  }
  return sawNanHigh64(nanHigh);
}

// B rows per tile for MR rows of A: MR x NB partial sums (+ MR x NB promoted
// ones at MR = 1), two decoded vectors and the decode's five constants
// within the 32 zmm registers; NB > 1 also keeps NB independent load streams.
constexpr int nbFor(int mr) { return mr == 1 ? 8 : mr == 2 ? 8 : mr == 3 ? 5 : 4; }

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

// A task's first lines are not prefetched by an earlier tile (the tile before
// them belongs to a task another thread may be running): the first tile
// requests its first `ahead` bytes of every row (short rows: of the region)
// together before it starts.
void warmFirstTile(const uint8_t* b, int64_t K, int64_t nRows, int nb) {
  const int64_t ahead = dotAhead(K, nb);
  const int64_t streams = K >= kDotLongRow ? nb : 1, bytes = K >= kDotLongRow ? ahead : std::min(ahead, nRows * K);
  for (int64_t j = 0; j < streams; ++j)
    for (int64_t x = 0; x < bytes; x += 64) _mm_prefetch(reinterpret_cast<const char*>(b + j * K + x), _MM_HINT_T0);
}

bool dotRows(const uint16_t* a, int64_t lda, int64_t rows, const float* sa, int64_t ldsa, const uint8_t* b, int64_t K,
             int64_t nRows, const float* sb, float* out, int64_t ldo) {
  bool nan = false;
  const int mr = static_cast<int>(rows);
  warmFirstTile(b, K, nRows, static_cast<int>(nRows < nbFor(mr) ? nRows : nbFor(mr)));
  for (int64_t j = 0; j < nRows;) {
    const int nb = static_cast<int>(nRows - j < nbFor(mr) ? nRows - j : nbFor(mr));
    nan |= pickDotTile(mr, nb)(a, lda, sa, ldsa, b + j * K, K, sb, out + j, ldo);
    j += nb;
  }
  return nan;
}

// ---- dot tile on decoded rows (the row-lane kernel's tail) --------------------

// Lanes along k as in dotTile, but against B rows already decoded to bf16 in
// L1 (by the row-lane kernel, for its lanes): a few rows of A past the
// lanes' whole zmm cost ~1/16 of a zmm's products each this way.
//
// An MR x NB register tile per 32-pair chunk: MR + NB loads and MR x NB
// VDPBF16PS into the group's partial sums (24 independent chains cover the
// instruction's latency of ~12 at 2 per cycle). At each group's end the
// partials are promoted into fin, which stays in memory ([rows][nb][16] f32,
// in L1): one load + FMA + store per 4 x MR x NB products, the cost of lanes
// along k (the row-lane kernel promotes once per 64 k-pairs).
//
// Per output element the operations and their order are dotTile's (chunks of
// 32 k in order, promotion per group, one horizontal sum at the end).
constexpr int kBlockMr = 4, kBlockNb = 6;  // 24 partials + 4 A + 1 B of the 32 zmm

// MR x NB sums over one K block of kc (whole groups), promoted into fin:
//   a: [MR, lda] bf16 at the block's first k; sa: [MR, ldsa] f32 at its first group;
//   b: [NB, ldb] decoded bf16 rows (their first kc); sb: [kc / 128] f32;
//   fin: [MR][ldf][16] f32 (row i, B row j at (i * ldf + j) * 16), zeroed first when `first`.
template <int MR, int NB>
void dotBlockTile(int64_t kc, const uint16_t* a, int64_t lda, const float* sa, int64_t ldsa, const uint16_t* b,
                  int64_t ldb, const float* sb, float* fin, int64_t ldf, bool first) {
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
        const __m512bh bv = asBf16(_mm512_load_si512(b + j * ldb + k));
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
        float* f = fin + (i * ldf + j) * 16;
        _mm512_store_ps(f, _mm512_fmadd_ps(par[i][j], s, zero ? _mm512_setzero_ps() : _mm512_load_ps(f)));
      }
    }
  }
}

using DotBlockTileFn = void (*)(int64_t, const uint16_t*, int64_t, const float*, int64_t, const uint16_t*, int64_t,
                                const float*, float*, int64_t, bool);

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
// ---- row-lane kernel (mid M) -------------------------------------------------

// D^T = B * A^T with A's rows in the lanes: each VDPBF16PS takes A's pair
// (k, k + 1) of 16 rows and one B row's pair broadcast from its decoded
// block in L1, so B needs no transpose (the natural-order decode costs
// ~1.1 ns per 64 bytes on one core here, the panel kernel's transposing
// packB ~2.1) and the sums need no horizontal reduction. Measured on one
// core at M = 16 from L2: 390 GFLOP/s for the tile alone (the panel
// microkernel 383, the VDPBF16PS probe 440-450), ~355 with the decode
// spread over the products, ~300-325 with B streamed from memory (lanes
// along k with B decoded per block: 220-250).
//
// From 4 zmm of rows (M > 48) the rows form lane groups of 2 or 3 zmm
// (Bf16LaneGroups) that share each decoded B block (B is still decoded once
// per call), and K is walked in passes whose A block fits L2 (see
// laneKPass).

// P = 1: dst[p, r] = (a[r, 2p], a[r, 2p + 1]) for r < 16 z (z = ceil(rows
// / 16) zmm of rows; rows >= `rows` as zeros), p < lda / 2: A's rows across
// the lanes of z zmm (row stride ldl dwords), one k-pair per dword. A 16 x 16
// dword transpose per 16 rows and 32 k. P = 2 (rows <= 8: one zmm's lanes of
// a lane group): lanes 2r, 2r + 1 of step s take pairs 2s, 2s + 1 of row r,
// one qword (bf16 4s .. 4s + 3): an 8 x 8 qword transpose per 32 k.
void packRowLanes(const uint16_t* a, int64_t lda, int64_t rows, int phases, int64_t ldl, uint32_t* dst) {
  if (phases != 1) {
    for (int64_t k = 0; k < lda; k += 32) {
      __m512i x[8];
      for (int r = 0; r < 8; ++r) x[r] = r < rows ? _mm512_loadu_si512(a + r * lda + k) : _mm512_setzero_si512();
      // x[r]: qwords q = 0..7 of row r; three stages of shuffles make x^T (qword q of rows 0..7).
      __m512i t[8], u[8];
      for (int r = 0; r < 8; r += 2) {
        t[r] = _mm512_unpacklo_epi64(x[r], x[r + 1]);      // rows r, r + 1 side by side: q 0, 2, 4, 6 (128-bit lanes)
        t[r + 1] = _mm512_unpackhi_epi64(x[r], x[r + 1]);  // q 1, 3, 5, 7
      }
      // u[4 o + 2 h + e], q = o + 2e: rows 4h, 4h + 1 at q and q + 4, then rows 4h + 2, 4h + 3 at q and q + 4.
      for (int h = 0; h < 2; ++h) {
        for (int o = 0; o < 2; ++o) {
          const __m512i lo = t[4 * h + o], hi = t[4 * h + 2 + o];
          u[4 * o + 2 * h] = _mm512_shuffle_i64x2(lo, hi, 0x88);
          u[4 * o + 2 * h + 1] = _mm512_shuffle_i64x2(lo, hi, 0xDD);
        }
      }
      for (int o = 0; o < 2; ++o) {
        for (int e = 0; e < 2; ++e) {
          const __m512i lo = u[4 * o + e], hi = u[4 * o + 2 + e];
          const int q = o + 2 * e;
          _mm512_storeu_si512(dst + (k / 4 + q) * ldl, _mm512_shuffle_i64x2(lo, hi, 0x88));
          _mm512_storeu_si512(dst + (k / 4 + q + 4) * ldl, _mm512_shuffle_i64x2(lo, hi, 0xDD));
        }
      }
    }
    return;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += 16) {
    for (int64_t k = 0; k < lda; k += 32) {
      __m512 x[16];
      for (int r = 0; r < 16; ++r)
        x[r] = r0 + r < rows ? _mm512_load_ps(reinterpret_cast<const float*>(a + (r0 + r) * lda + k)) : _mm512_setzero_ps();
      transpose16x16(x);  // x[q]: pair k / 2 + q of the 16 rows
      for (int q = 0; q < 16; ++q) _mm512_store_ps(reinterpret_cast<float*>(dst + (k / 2 + q) * ldl + r0), x[q]);
    }
  }
}

// acc += the 16 dwords of a (bf16 pairs) times the pair at *b broadcast to
// every lane ({1to16}: the broadcast rides on the load, no shuffle).
inline __m512 dotBroadcast(__m512 acc, __m512bh a, const uint16_t* b) {
  asm("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(a), "m"(*reinterpret_cast<const uint32_t*>(b)));
  return acc;
}

// The row-lane kernel walks its B rows in blocks of nb rows x kBf16LaneKc:
// K in passes of kPass blocks, and inside a pass row block by row block, the
// pass's K blocks inside each. (One pass when A fits: row block by row block,
// all of K inside each.)
struct LaneBlock {
  int64_t s0, ns;  // rows [s0, s0 + ns) of the run, ns <= nb
  int64_t k0, kc;  // K [k0, k0 + kc) of the padded K
};

// Walks a task's blocks in that order, then those of the rows after its last
// one (the caller's next task on this thread: a call requests their lines so
// that the next task's first blocks arrive while this one's last blocks are
// computed instead of after it starts). Counters only: the walk runs once
// per block, twice over (the block decoded next, the block requested), and
// the divisions of indexing the order ran M = 32 at ~1.03x the time.
class LaneWalk {
 public:
  // nb: B rows per block (<= kBf16LaneNb); kPass: K blocks per pass; rowsAfter: the rows after the task's.
  LaneWalk(int64_t nRows, int64_t rowsAfter, int64_t lda, int64_t nb, int64_t kPass)
      : rows_(nRows), rowsAfter_(rowsAfter), lda_(lda), nb_(nb), kPass_(kPass),
        kBlocks_((lda + kBf16LaneKc - 1) / kBf16LaneKc), passEnd_(std::min(kPass, kBlocks_)) {
    if (rows_ == 0) nextRows();
  }
  bool done() const { return rows_ == 0; }         // past the last block, the following rows' too
  bool inTask() const { return !following_; }      // at one of the task's own blocks
  LaneBlock block() const {
    const int64_t k0 = kb_ * kBf16LaneKc;
    return {rowOffset_ + s0_, rows_ - s0_ < nb_ ? rows_ - s0_ : nb_, k0, lda_ - k0 < kBf16LaneKc ? lda_ - k0 : kBf16LaneKc};
  }
  void advance() {
    if (++kb_ < passEnd_) return;
    kb_ = passStart_;  // the pass's next row block
    if ((s0_ += nb_) < rows_) return;
    s0_ = 0;  // the next pass
    passStart_ = passEnd_;
    passEnd_ = std::min(passEnd_ + kPass_, kBlocks_);
    kb_ = passStart_;
    if (passStart_ == kBlocks_) nextRows();
  }

 private:
  void nextRows() {  // from the task's rows to the rows after them (then nothing)
    rowOffset_ += rows_;
    rows_ = following_ ? 0 : rowsAfter_;
    following_ = true;
    s0_ = kb_ = passStart_ = 0;
    passEnd_ = std::min(kPass_, kBlocks_);
  }

  int64_t rows_, rowsAfter_, lda_, nb_, kPass_, kBlocks_;
  bool following_ = false;            // past the task's own rows
  int64_t rowOffset_ = 0;             // the rows' first row in b (0: the task's own)
  int64_t s0_ = 0, kb_ = 0;           // the block: its first row (of rows_), its K block
  int64_t passStart_ = 0, passEnd_;   // the pass's K blocks
};

// How many blocks ahead of its use a block's fp8 lines are requested. One
// block of compute (16 x 16 x 256 products, ~0.4 us on one core) hides the
// memory latency when the block's rows are short and close together (K <
// kLaneLongRow: a task's rows form one region the hardware prefetchers
// follow); with long rows each of the 16 rows is a stream of its own that
// advances 256 bytes per block, and two blocks ahead ran M = 16 in 0.91-0.94x
// the time at K = 7168 (one and two threads, weights from memory), 0.97x at
// K = 1536, 1.0x at 2048 and 1.05-1.07x at 512 (so: not there). At K = 1792
// (DeepSeek-V3's experts at H = 1792, 128 of them, one thread) 0.79x at
// M = 8 (two k-pairs per lane), 0.90-0.94x at M = 16, 0.96x at M = 32; a
// whole block row ahead, or into L2 only, was no better there (and into L2
// 1.05-1.15x at K = 512).
constexpr int64_t kLaneLongRow = 1024;
inline int64_t laneAhead(int64_t K) { return K >= kLaneLongRow ? 2 : 1; }

// K blocks per pass: every row block re-reads the pass's A block [kPass *
// kBf16LaneKc / 2, L] dwords, which must stay in L2 rather than come from
// L3 (at M = 128 and K = 7168 all of A is 1.8 MiB).
constexpr int64_t kLanePassBytes = 256 * 1024;
inline int64_t laneKPass(int64_t lanes) {
  const int64_t perBlock = kBf16LaneKc / 2 * lanes * 4;
  return std::max<int64_t>(1, kLanePassBytes / perBlock);
}

// Requests every fp8 line of a block (its rows' bytes in its K block).
void prefetchLaneBlock(const uint8_t* b, int64_t K, const LaneBlock& block) {
  const int64_t len = K - block.k0 < block.kc ? K - block.k0 : block.kc;
  for (int64_t r = 0; r < block.ns; ++r)
    for (int64_t k = 0; k < len; k += 64) _mm_prefetch(reinterpret_cast<const char*>(b + (block.s0 + r) * K + block.k0 + k), _MM_HINT_T0);
}

// Decodes one block's fp8 rows into bf16 [nb, kBf16LaneKc] (the
// first kc of each row; rows >= ns as zeros), 64 bytes per step, so that the
// steps can be spread over the previous block's products: the decode's
// shuffles then share the cycles of the VDPBF16PS instead of following them
// (355 against 313 GFLOP/s on one core from L2). Each line decoded prefetches
// its counterpart in the block after (ahead: one block of compute).
class LaneDecoder {
 public:
  LaneDecoder(const uint8_t* b, int64_t K, const LaneBlock& block, const LaneBlock* after, uint16_t* dst, int64_t nb)
      : src_(b + block.s0 * K + block.k0 + block.kc), pre_(src_), out_(dst + block.kc),
        lenEnd_((block.ns > 0 ? std::min(K - block.k0, block.kc) : 0) - block.kc), preEnd_(-block.kc),
        left_(nb * (block.kc / 64)), K_(K), kc_(block.kc), rowsLeft_(block.ns), k_(-block.kc) {
    if (after != nullptr) {
      // The block after's rows lie a constant distance from this block's.
      pre_ += (after->s0 - block.s0) * K + (after->k0 - block.k0);
      preEnd_ = (after->ns > 0 ? std::min(K - after->k0, after->kc) : 0) - block.kc;
      preRowsLeft_ = after->ns;
    }
  }
  bool done() const { return left_ == 0; }

  // One 64-byte step: row r of the block, bytes [k_, k_ + 64) of its K
  // block (bytes at or past K, and rows >= ns, as zeros). The state is a
  // few pointers and counts, advanced without multiplies, so that it stays
  // in registers beside the tile's: k runs from -kc to 0 against pointers
  // at the row's end (with kc and the offset of the block after, GCC kept
  // both on the stack: two more loads per step beside the tile's 34; with
  // the tile's pointer walk, M = 12 and 16 ran in 0.98-1.0x the time, one
  // thread from L2 and L3).
  inline void step(const Fp8Bf16Tables& t) {
    if (k_ < preEnd_) _mm_prefetch(reinterpret_cast<const char*>(pre_ + k_), _MM_HINT_T0);
    if (k_ < lenEnd_) {
      const __m512i bytes = k_ + 64 <= lenEnd_ ? _mm512_loadu_si512(src_ + k_)
                                              : _mm512_maskz_loadu_epi8((__mmask64(1) << (lenEnd_ - k_)) - 1, src_ + k_);
      bf16FromFp8x64(t, bytes, out_ + k_, nan_);
    } else {
      _mm512_store_si512(out_ + k_, _mm512_setzero_si512());
      _mm512_store_si512(out_ + k_ + 32, _mm512_setzero_si512());
    }
    --left_;
    if ((k_ += 64) == 0) nextRow();
  }
  void finish(const Fp8Bf16Tables& t) {
    while (!done()) step(t);
  }
  __m512i nan() const { return nan_; }  // byte maxima of the decoded high bytes (see sawNanHigh64)

 private:
  void nextRow() {
    k_ = -kc_;
    src_ += K_;
    pre_ += K_;
    out_ += kBf16LaneKc;
    if (--rowsLeft_ == 0) lenEnd_ = -kc_;        // rows >= ns: zeros
    if (--preRowsLeft_ == 0) preEnd_ = -kc_;  // the block after has no such row
  }

  const uint8_t* src_;  // the end of row r's K block (its first byte + kc)
  const uint8_t* pre_;  // the same in the block after (ahead), whose lines are requested
  uint16_t* out_;       // the end of row r's first kc in the decoded block [nb, kBf16LaneKc] bf16
  int64_t lenEnd_;      // bytes of row r inside K, minus kc (-kc from row ns on)
  int64_t preEnd_;      // the same in the block after (-kc past its rows, or without one)
  int64_t left_;        // steps left
  int64_t K_, kc_;
  int64_t rowsLeft_, preRowsLeft_ = 0;
  int64_t k_;  // -kc .. 0: the step's first byte, from the row's K block end
  __m512i nan_ = _mm512_setzero_si512();
};

// MZ zmm of A's rows (one lane group; 16 / P rows each) x NB B columns over
// one K block of kc: per step of P k-pairs MZ loads of A's pairs and MZ x NB
// VDPBF16PS, each B row's P pairs broadcast once (P = 1 at MZ = 1 straight
// from memory, {1to16}; else into a register shared by the MZ products); the
// partial sums are promoted once per group (1 FMA per 64 / P VDPBF16PS, no
// horizontal sums) into fin, zeroed by the first K block. Every second
// k-pair also runs one step of the next block's decode while any is left
// (kc / 2 pairs, NB * kc / 64 steps of a block as long: whatever is left
// runs after; with several lane groups the first one's tile decodes it
// all). MZ x NB partial sums, MZ A vectors and a broadcast fit the 32 zmm.
// (The decoder is copied in and out so that its state lives in registers.)
//   a: [kc / 2P, MZ * 16] dwords; saT: [kc / 128, MZ * 16] f32; b: [NB, kBf16LaneKc] bf16 (the first kc
//   of each row; a constant stride, so that the broadcasts address off one register); sb: [kc / 128] f32;
//   fin: [NB, MZ * 16] f32.
// (Inlined into its caller: compiled on its own, GCC copied the partial
// sums between registers and spilled one at every k-pair.)
template <int MZ, int NB, int P>
[[gnu::always_inline]] inline void laneTile(int64_t kc, const uint32_t* a, const float* saT, const uint16_t* b,
                                            const float* sb, float* fin, bool first, LaneDecoder* nextBlock) {
  static_assert(P == 1 || P == 2, "one or two k-pairs per row and zmm");
  constexpr int L = MZ * 16;  // lanes
  LaneDecoder next = *nextBlock;
  const Fp8Bf16Tables t = Fp8Bf16Tables::load();
  for (int64_t g = 0; g < kc / kBf16Group; ++g) {
    __m512 par[MZ][NB];
#pragma GCC unroll 32
    for (int x = 0; x < MZ * NB; ++x) par[x / NB][x % NB] = _mm512_setzero_ps();
    // Two k-pairs per iteration, A's and B's walked by pointer (one register
    // fewer than indices, for the decoder's state).
    const uint32_t* ap = a + g * kPairsPerGroup / P * L;  // pair p's step: a + p / P * L
    const uint32_t* const aEnd = ap + kPairsPerGroup / P * L;
    for (const uint16_t* bp = b + 2 * g * kPairsPerGroup; ap != aEnd; ap += 2 / P * L, bp += 4) {
      if (!next.done()) next.step(t);
#pragma GCC unroll 2
      for (int s = 0; s < 2 / P; ++s) {  // pairs P s .. P s + P - 1 of the two
        __m512bh av[MZ];
#pragma GCC unroll 4
        for (int z = 0; z < MZ; ++z) av[z] = asBf16(_mm512_load_si512(ap + s * L + 16 * z));
#pragma GCC unroll 16
        for (int j = 0; j < NB; ++j) {
          const uint16_t* bj = bp + j * kBf16LaneKc + 2 * P * s;
          if constexpr (P == 2) {
            // pairs P s, P s + 1 of B row j to every two lanes: one qword broadcast
            // from memory, a load alone (from a register it is a shuffle
            // beside every product, and ran at about half the rate)
            __m512i pairs;
            asm("vpbroadcastq %1, %0" : "=v"(pairs) : "m"(*reinterpret_cast<const uint64_t*>(bj)));
            const __m512bh bv = asBf16(pairs);
#pragma GCC unroll 4
            for (int z = 0; z < MZ; ++z) par[z][j] = _mm512_dpbf16_ps(par[z][j], av[z], bv);
          } else if constexpr (MZ == 1) {
            par[0][j] = dotBroadcast(par[0][j], av[0], bj);
          } else {
            int32_t pair;
            std::memcpy(&pair, bj, 4);
            const __m512bh bv = asBf16(_mm512_set1_epi32(pair));
#pragma GCC unroll 4
            for (int z = 0; z < MZ; ++z) par[z][j] = _mm512_dpbf16_ps(par[z][j], av[z], bv);
          }
        }
      }
    }
    const __m512 sbg = _mm512_set1_ps(sb[g]);
    const bool zero = first && g == 0;
#pragma GCC unroll 4
    for (int z = 0; z < MZ; ++z) {
      const __m512 s = _mm512_mul_ps(_mm512_load_ps(saT + g * L + 16 * z), sbg);
#pragma GCC unroll 16
      for (int j = 0; j < NB; ++j) {
        float* f = fin + j * L + 16 * z;
        _mm512_store_ps(f, _mm512_fmadd_ps(par[z][j], s, zero ? _mm512_setzero_ps() : _mm512_load_ps(f)));
      }
    }
  }
  next.finish(t);
  *nextBlock = next;
}

// laneTile against a block of ns <= NB B rows: the tile of the fewest
// multiple of 4 rows >= ns (each B row's sums are its own chains, so the
// bits are NB's). A task's rows that NB does not divide end in a short
// block (64 rows in blocks of 12: 12 x 5 + 4), which NB's tile computed in
// full, zero rows included. (fin's rows past the tile's stay unwritten: the
// transpose back to rows masks them off.)
template <int MZ, int NB, int P>
[[gnu::always_inline]] inline void laneTileRows(int64_t ns, int64_t kc, const uint32_t* a, const float* saT,
                                                const uint16_t* b, const float* sb, float* fin, bool first,
                                                LaneDecoder* nextBlock) {
  static_assert(NB % 4 == 0, "tiles of 4, 8, .. NB rows");
  if constexpr (NB > 4) {
    if (ns <= NB - 4) return laneTileRows<MZ, NB - 4, P>(ns, kc, a, saT, b, sb, fin, first, nextBlock);
  }
  laneTile<MZ, NB, P>(kc, a, saT, b, sb, fin, first, nextBlock);
}

// The tail rows (past the lanes' whole zmm) against one decoded block:
// tiles of <= kBlockMr rows x kBlockNb B rows.
//   a: [tail, lda] bf16 at its first row; sa: [tail, ldsa] f32; decoded: [NB, kBf16LaneKc] bf16 (block);
//   sb: [lda / 128] f32 (all groups); fin: [tail][nb][16] f32.
void laneTailBlock(const LaneBlock& block, const uint16_t* decoded, const uint16_t* a, int64_t lda, const float* sa,
                   int64_t ldsa, int64_t tail, const float* sb, float* fin, int64_t nb) {
  const int64_t g0 = block.k0 / kBf16Group;
  for (int64_t i0 = 0; i0 < tail; i0 += kBlockMr) {
    const int mr = static_cast<int>(tail - i0 < kBlockMr ? tail - i0 : kBlockMr);
    for (int64_t j0 = 0; j0 < block.ns; j0 += kBlockNb) {
      const int nbTile = static_cast<int>(block.ns - j0 < kBlockNb ? block.ns - j0 : kBlockNb);
      pickDotBlockTile(mr, nbTile)(block.kc, a + i0 * lda + block.k0, lda, sa + i0 * ldsa + g0, ldsa,
                                   decoded + j0 * kBf16LaneKc, kBf16LaneKc, sb + g0, fin + (i0 * nb + j0) * 16, nb,
                                   block.k0 == 0);
    }
  }
}

// The lane groups Bf16LaneGroups makes against blocks of NB B rows: each of
// ZLO or ZHI zmm (one instantiation per pair, so that both tiles inline), P
// k-pairs per row and zmm (bf16LaneShape).
template <int NB, int ZLO, int ZHI, int P>
bool laneRowsTiled(const uint32_t* lanes, const float* saT, const uint16_t* a, const float* sa, int64_t ldsa,
                   int64_t lda, int64_t rows, const uint8_t* b, int64_t K, int64_t nRows, int64_t nRowsAfter,
                   const float* sb, float* out, int64_t ldo, void* scratch) {
  const Bf16LaneGroups groups(rows);
  constexpr int64_t nb = NB;
  const int64_t width = 16 * groups.zmm;  // lanes
  const int64_t laneRows = width / P;    // rows held in them
  const int64_t laneRowCount = rows < laneRows ? rows : laneRows, tail = rows - laneRowCount;  // tail <= kBf16LaneTailMax
  constexpr int64_t kBufWords = kBf16LaneNb * kBf16LaneKc;  // one decoded block (room for kBf16LaneNb rows)
  uint16_t* buf[2] = {static_cast<uint16_t*>(scratch), static_cast<uint16_t*>(scratch) + kBufWords};  // [nb, kc] bf16 each
  // The task's D^T: per block of nb B rows [nb, width] f32, group i's [nb, width(i)] at nb x its first lane;
  // the tail's sums: per block [tail][nb][16] f32 (in one pass over K, one block of each for all: each row
  // block is done before the next starts).
  float* fin = static_cast<float*>(scratch) + kBufWords;
  float* tailFin = fin + (nRows + kBf16LaneNb) * width;
  const int64_t kPass = laneKPass(width);
  const bool onePass = kPass * kBf16LaneKc >= lda;
  // walk: the block computed (i), then the one decoded beside it (i + 1); request: i + ahead, whose
  // lines the decode of block i requests (blocks 1 .. ahead - 1 are requested up front).
  LaneWalk walk(nRows, nRowsAfter, lda, nb, kPass), request = walk;
  const int64_t ahead = laneAhead(K);
  for (int64_t j = 1; j <= ahead; ++j) {
    request.advance();
    if (j < ahead && request.inTask()) prefetchLaneBlock(b, K, request.block());
  }
  __m512i nan = _mm512_setzero_si512();
  LaneBlock block = walk.block();
  {
    const LaneBlock after = request.done() ? LaneBlock{} : request.block();
    LaneDecoder first(b, K, block, request.done() ? nullptr : &after, buf[0], nb);
    first.finish(Fp8Bf16Tables::load());
    nan = first.nan();
  }
  for (int64_t i = 0;; ++i) {
    walk.advance();
    request.advance();
    const bool hasNext = walk.inTask();
    const LaneBlock next = hasNext ? walk.block() : LaneBlock{};
    const bool hasAfter = hasNext && !request.done();
    const LaneBlock after = hasAfter ? request.block() : LaneBlock{};
    // Past the last block: a decoder with nothing to do (no rows, no steps).
    LaneDecoder decoder(b, K, hasNext ? next : LaneBlock{0, 0, 0, 0}, hasAfter ? &after : nullptr,
                        buf[(i + 1) % 2], nb);
    float* blockFin = fin + (onePass ? 0 : block.s0 * width);  // [nb, width]
    float* blockTailFin = tailFin + (onePass ? 0 : block.s0 * kBf16LaneTailMax * 16);  // [tail][nb][16]
    for (int gi = 0; gi < groups.count; ++gi) {
      const int64_t lane0 = 16 * groups.z0[gi];
      const uint32_t* groupA = lanes + lda / 2 / P * lane0 + block.k0 / 2 / P * groups.width(gi);
      const float* groupSaT = saT + lda / kBf16Group * lane0 + block.k0 / kBf16Group * groups.width(gi);
      const float* blockSb = sb + block.k0 / kBf16Group;
      if (ZLO == ZHI || groups.width(gi) == 16 * ZHI)
        laneTileRows<ZHI, NB, P>(block.ns, block.kc, groupA, groupSaT, buf[i % 2], blockSb, blockFin + nb * lane0, block.k0 == 0, &decoder);
      else
        laneTileRows<ZLO, NB, P>(block.ns, block.kc, groupA, groupSaT, buf[i % 2], blockSb, blockFin + nb * lane0, block.k0 == 0, &decoder);
    }
    nan = _mm512_max_epu8(nan, decoder.nan());
    if (tail > 0) laneTailBlock(block, buf[i % 2], a + laneRows * lda, lda, sa + laneRows * ldsa, ldsa, tail, sb, blockTailFin, nb);
    if (block.k0 + block.kc == lda) {
      // blockFin holds D^T (column j of the block in row j of each group's
      // part, rows of A in lanes): back to rows, 16 at a time.
      const __mmask16 cols = static_cast<__mmask16>((1u << block.ns) - 1);
      for (int gi = 0; gi < groups.count; ++gi) {
        const int64_t groupWidth = groups.width(gi);
        const float* groupFin = blockFin + nb * 16 * groups.z0[gi];  // [nb, groupWidth]
        for (int64_t z = groups.z0[gi]; z < groups.z0[gi + 1]; ++z) {
          __m512 x[16];
          const float* zFin = groupFin + 16 * (z - groups.z0[gi]);
          for (int j = 0; j < 16; ++j) x[j] = j < nb ? _mm512_load_ps(zFin + j * groupWidth) : _mm512_setzero_ps();
          transpose16x16(x);  // x[l]: lane l's sums over the block's columns; a row's P lanes added
          for (int64_t r = 0; r < 16 / P && 16 / P * z + r < laneRowCount; ++r) {
            const __m512 sum = P == 1 ? x[r] : _mm512_add_ps(x[P * r], x[P * r + 1]);
            _mm512_mask_storeu_ps(out + (16 / P * z + r) * ldo + block.s0, cols, sum);
          }
        }
      }
      for (int64_t i = 0; i < tail; ++i)
        for (int64_t j = 0; j < block.ns; ++j)
          out[(laneRows + i) * ldo + block.s0 + j] = _mm512_reduce_add_ps(_mm512_load_ps(blockTailFin + (i * nb + j) * 16));
    }
    if (!hasNext) break;
    block = next;
  }
  return sawNanHigh64(nan);
}

bool laneRows(const uint32_t* lanes, const float* saT, const uint16_t* a, const float* sa, int64_t ldsa, int64_t lda,
              int64_t rows, const uint8_t* b, int64_t K, int64_t nRows, int64_t nRowsAfter, const float* sb, float* out,
              int64_t ldo, void* scratch) {
  const auto run = [&](auto tiled) { return tiled(lanes, saT, a, sa, ldsa, lda, rows, b, K, nRows, nRowsAfter, sb, out, ldo, scratch); };
  if (bf16LaneShape(rows).phases == 2) {
    switch (Bf16LaneGroups(rows).zmm) {
      case 1: return run(laneRowsTiled<16, 1, 1, 2>);
      case 2: return run(laneRowsTiled<12, 2, 2, 2>);
      default: return run(laneRowsTiled<8, 3, 3, 2>);
    }
  }
  switch (Bf16LaneGroups(rows).zmm) {
    case 1: return run(laneRowsTiled<16, 1, 1, 1>);
    case 2: return run(laneRowsTiled<12, 2, 2, 1>);
    case 3: return run(laneRowsTiled<8, 3, 3, 1>);
    default: return run(laneRowsTiled<8, 2, 3, 1>);
  }
}

// laneRows' instantiations are Bf16LaneGroups' plans.
static_assert(Bf16LaneGroups(kBf16HalfLaneMaxM).nb == 16 && Bf16LaneGroups(kBf16HalfLaneMaxM).zmm == 1 &&
                  Bf16LaneGroups(kBf16TwoHalfLaneMaxM).zmm == 2 && Bf16LaneGroups(kBf16TwoHalfLaneMaxM).nb == 12 &&
                  Bf16LaneGroups(kBf16PairLaneMinM).zmm == 3 && Bf16LaneGroups(kBf16PairLaneMaxM).nb == 8 &&
                  Bf16LaneGroups(17).nb == 16 && Bf16LaneGroups(32).nb == 12 && Bf16LaneGroups(48).nb == 8 &&
                  Bf16LaneGroups(64).nb == 8 && Bf16LaneGroups(64).count == 2 && Bf16LaneGroups(72).count == 2 &&
                  Bf16LaneGroups(73).nb == 8 && Bf16LaneGroups(73).count == 2 &&
                  Bf16LaneGroups(kBf16LaneMaxM).nb == 8 && kBf16LaneNb == 16,
              "P = 2: one zmm against 16 B rows, two against 12, three against 8; P = 1: one group of 1..3 zmm against 16, 12, 8 "
              "B rows; groups of 2 or 3 zmm against 8");

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
    {nullptr, micro<1, 4>, micro<2, 4>, micro<3, 4>, micro<4, 4>},
    {nullptr, micro<1, 2>, micro<2, 2>, micro<3, 2>, micro<4, 2>, micro<5, 2>, micro<6, 2>, micro<7, 2>, micro<8, 2>},
    dotRows,
    packRowLanes,
    laneRows,
    dotBurn,
};

static_assert(kBf16Mr == 4, "kAvx512Bf16Kernels.micro lists MR = 1 .. 4, micro32 MR = 1 .. 8");

}  // namespace moe::cpu::fp8gemm
