// AMX-BF16 kernels of the fp8 GEMM (see gemm_fp8_kernels.h for the contracts;
// the blocking and threading live in gemm_fp8.cpp).
//
// As in gemm_fp8_avx512.cpp, headers come first and the target pragma after
// them, and nothing below it instantiates a library template, so no
// AMX / AVX-512 copy of a shared inline function can reach code that runs on
// other CPUs. Only the functions declared in gemm_fp8_kernels.h have external
// linkage; they are called only when gemmUsesAmx().
//
// Tiles (one configuration, every tile 16 rows x 64 bytes):
//   tmm0..3  C: D^T blocks, 16 n x 16 m f32 (n-tile h, m-tile t -> tmm(2t + h))
//   tmm4, 5  B rows n .. n+15 and n+16 .. n+31, 32 k as bf16 (row operand)
//   tmm6, 7  A m-tiles t = 0, 1 in VNNI form: 16 k-pairs x 16 rows (column operand)
// A 32 (n) x 32 (m) block costs 4 tile loads per 4 TDPBF16PS per K step of 32.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/gemm_fp8_kernels.h"

#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,amx-tile,amx-bf16")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu/amx_tiles.h"  // after the target pragma: its inline functions are AMX code
#include "cpu/fp8_bf16_x64.h"  // the same
#include "cpu/bf16_round_avx512.h"  // the same

namespace moe::cpu::fp8gemm {
namespace {

constexpr int64_t kGroup = 128;       // K per scale group
constexpr int64_t kStepsPerGroup = kGroup / kAmxKStep;
constexpr int64_t kWbufLd = kGroup;   // bf16 per wbuf row
// acc holds the block as [n-pair][m-tile][32 n][16 m] f32 pieces of 2 KiB:
// contiguous per tile pair (row-major [n][m] rows would sit 4 KiB apart and
// alias in L1 at mc = 512).
constexpr int64_t kAccTile = 32 * 16;

inline int64_t minI(int64_t x, int64_t y) { return x < y ? x : y; }

// ---- fp8 -> bf16 ------------------------------------------------------------
//
// e4m3 s.eeee.mmm (e > 0) is the bf16 s.(e + 120).mmm0000: shift the byte's
// magnitude left 4 and add 120 << 7 to the exponent. e == 0 (zero and the
// subnormals m * 2^-9) is looked up by m in a 32-word table (vpermw reads the
// low 5 bits of each index word: bits 3, 4 are the zero exponent's, so the
// index is m). The sign is or-ed in last. NaN codes decode finite (they are
// caught on the bytes, as in the AVX-512 kernels).
inline __m512i bf16FromFp8(__m256i bytes) {
  const __m512i ws = _mm512_cvtepi8_epi16(bytes);  // sign-extended: bit 15 = sign
  const __m512i table = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         0x3C60, 0x3C40, 0x3C20, 0x3C00, 0x3BC0, 0x3B80, 0x3B00, 0x0000);
  __m512i x = _mm512_add_epi16(_mm512_and_si512(_mm512_slli_epi16(ws, 4), _mm512_set1_epi16(0x07F0)),
                               _mm512_set1_epi16(0x3C00));
  const __mmask32 zeroExp = _mm512_testn_epi16_mask(ws, _mm512_set1_epi16(0x0078));
  x = _mm512_mask_permutexvar_epi16(x, zeroExp, ws, table);
  return _mm512_ternarylogic_epi32(x, ws, _mm512_set1_epi16(static_cast<short>(0x8000)), 0xF8);  // x | (ws & 0x8000)
}

inline __m256i trackNan(__m256i acc, __m256i bytes) {
  return _mm256_max_epu8(acc, _mm256_or_si256(bytes, _mm256_set1_epi8(static_cast<char>(0x80))));
}

inline bool sawNan(__m256i acc) {
  return _mm256_movemask_epi8(_mm256_cmpeq_epi8(acc, _mm256_set1_epi8(-1))) != 0;
}

// Bytes [k, k + 32) of a row whose valid length is `len` (a multiple of 16);
// the missing bytes read as zero (masked load: no access past the row).
inline __m256i loadChunk(const uint8_t* row, int64_t k, int64_t len) {
  if (k + 32 <= len) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k));
  return _mm256_maskz_loadu_epi8(static_cast<__mmask32>(0xFFFFu), row + k);  // 16 valid bytes
}

// ---- output -----------------------------------------------------------------

// D[m0 + i, n0 + j] = acc[j, i] for i < mEff, j < nEff.
void writeBlock(const AmxBlockJob& job, int64_t mTiles) {
  for (int64_t nb = 0; nb < job.nEff; nb += 16) {
    const int64_t cols = minI(16, job.nEff - nb);
    const __mmask16 colMask = static_cast<__mmask16>((1u << cols) - 1u);
    for (int64_t mb = 0; mb < job.mEff; mb += 16) {
      const int64_t rows = minI(16, job.mEff - mb);
      __m512 r[16];
      const float* acc = job.acc + ((nb / 32) * mTiles + mb / 16) * kAccTile + (nb % 32) * 16;
      for (int j = 0; j < 16; ++j) r[j] = _mm512_load_ps(acc + 16 * j);
      transpose16x16(r);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t m = job.m0 + mb + i;
        if (job.bf16) {
          uint16_t* out = reinterpret_cast<uint16_t*>(job.d) + m * job.N + job.n0 + nb;
          _mm256_mask_storeu_epi16(out, colMask, bf16FromFloat16(r[i]));
        } else {
          float* out = reinterpret_cast<float*>(job.d) + m * job.N + job.n0 + nb;
          _mm512_mask_storeu_ps(out, colMask, r[i]);
        }
      }
    }
  }
}

// ---- packing ----------------------------------------------------------------

// dst[r, 0 .. 32 kSteps) = bf16(B[n0 + r, k0 ..]) for r in [r0, r1) (rows
// past N as zeros; k past K as zeros). Also prefetches the rows' next group:
// B is read 128 bytes per row and group, too many streams for the hardware
// prefetchers.
bool decodeB(const AmxBlockJob& job, int64_t k0, int64_t kSteps, int64_t r0, int64_t r1, uint16_t* dst) {
  __m512i nan = _mm512_setzero_si512();
  const bool prefetchNext = k0 + kGroup < job.K;
  for (int64_t r = r0; r < r1; ++r) {
    uint16_t* out = dst + r * kWbufLd;
    if (job.n0 + r >= job.N) {
      for (int64_t s = 0; s < kSteps; ++s) _mm512_store_si512(out + s * 32, _mm512_setzero_si512());
      continue;
    }
    const uint8_t* row = job.b + (job.n0 + r) * job.K;
    if (prefetchNext) {
      _mm_prefetch(reinterpret_cast<const char*>(row + k0 + kGroup), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + k0 + kGroup + 64), _MM_HINT_T0);
    }
    // Two K steps per 64-byte load; bytes past K load as zeros (decoded to 0,
    // and a step wholly past K is never multiplied).
    for (int64_t s = 0; s < kSteps; s += 2) {
      const int64_t k = k0 + s * 32;
      const __m512i bytes = k + 64 <= job.K ? _mm512_loadu_si512(row + k)
                                            : _mm512_maskz_loadu_epi8((__mmask64(1) << (job.K - k)) - 1, row + k);
      nan = trackNan64(nan, bytes);
      bf16FromFp8x64(bytes, out + s * 32);
    }
  }
  return sawNan64(nan);
}

// ---- the tile block -----------------------------------------------------------

// C tiles for one 32 (n) x 16 MT (m) block over kSteps K steps. w: wbuf at
// the block's first row; act: the first m-tile's packed A at this group's
// first K step.
template <int MT>
inline void tileBlock(const uint16_t* w, const uint32_t* act, int64_t actTileStride, int64_t kSteps) {
  _tile_zero(0);
  _tile_zero(1);
  if (MT == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t s = 0; s < kSteps; ++s) {
    _tile_loadd(4, w + s * 32, kWbufLd * 2);
    _tile_loadd(5, w + 16 * kWbufLd + s * 32, kWbufLd * 2);
    _tile_loadd(6, act + s * kAmxTileWords, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 5, 6);
    if (MT == 2) {
      _tile_loadd(7, act + actTileStride + s * kAmxTileWords, 64);
      _tile_dpbf16ps(2, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}

// The C tiles to cbuf [MT * 2][16][16].
template <int MT>
inline void storeTiles(float* cbuf) {
  _tile_stored(0, cbuf, 64);
  _tile_stored(1, cbuf + 256, 64);
  if (MT == 2) {
    _tile_stored(2, cbuf + 512, 64);
    _tile_stored(3, cbuf + 768, 64);
  }
}

// A block whose tiles are stored and await promotion into acc.
struct Pending {
  const float* cbuf;
  float* acc;         // acc at the block's origin
  const float* saT;   // saT row of the group at the block's first m
  float sb;
  int mt;
  bool first;         // the first K group: acc = c * scale
};

// acc[n, m] (+)= c[n, m] * saT[m] * sb over the block's 32 x 16 mt entries.
inline void promote(const Pending& p) {
  const __m512 sbv = _mm512_set1_ps(p.sb);
  for (int t = 0; t < p.mt; ++t) {
    const __m512 scale = _mm512_mul_ps(_mm512_loadu_ps(p.saT + 16 * t), sbv);
    for (int h = 0; h < 2; ++h) {
      const float* c = p.cbuf + (2 * t + h) * 256;
      float* acc = p.acc + t * kAccTile + 16 * 16 * h;
      if (p.first) {
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) _mm512_store_ps(acc + 16 * r, _mm512_mul_ps(_mm512_load_ps(c + 16 * r), scale));
      } else {
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) {
          float* a = acc + 16 * r;
          _mm512_store_ps(a, _mm512_fmadd_ps(_mm512_load_ps(c + 16 * r), scale, _mm512_load_ps(a)));
        }
      }
    }
  }
}

}  // namespace

bool amxPackA(const uint8_t* a, const int32_t* rows, int64_t M, int64_t K, int64_t tile, int64_t mTiles, uint32_t* act) {
  const int64_t kSteps = (K + kAmxKStep - 1) / kAmxKStep;
  __m256i nan = _mm256_setzero_si256();
  for (int64_t s = 0; s < kSteps; ++s) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t m = tile * 16 + i;
      if (m >= M) {
        r[i] = _mm512_setzero_ps();
        continue;
      }
      const __m256i bytes = loadChunk(a + (rows != nullptr ? rows[m] : m) * K, s * 32, K);
      nan = trackNan(nan, bytes);
      r[i] = _mm512_castsi512_ps(bf16FromFp8(bytes));  // 16 k-pairs of row m
    }
    transpose16x16(r);  // r[p] = k-pair p of the 16 rows
    const int64_t g = s / kStepsPerGroup;
    uint32_t* out = act + ((g * mTiles + tile) * kStepsPerGroup + s % kStepsPerGroup) * kAmxTileWords;
    for (int p = 0; p < 16; ++p) _mm512_store_ps(reinterpret_cast<float*>(out + 16 * p), r[p]);
  }
  return sawNan(nan);
}

bool amxRunBlock(const AmxBlockJob& job) {
  loadTileConfig();
  const int64_t mTiles = (job.mEff + 15) / 16;
  const int64_t nPairs = (job.nEff + 31) / 32;
  const int64_t rows = nPairs * 32;
  const int64_t actTileStride = kStepsPerGroup * kAmxTileWords;  // dwords between consecutive m-tiles
  auto groupSteps = [&](int64_t g) { return minI(kStepsPerGroup, (job.K - g * kGroup + kAmxKStep - 1) / kAmxKStep); };
  // B rows of group g live in wbuf half g % 2; group g + 1 is decoded a few
  // rows after each tile block of group g, so the vector units decode while
  // the tile unit multiplies.
  uint16_t* wbufs[2] = {job.wbuf, job.wbuf + rows * kWbufLd};
  const int64_t blocksPerGroup = ((mTiles + 1) / 2) * nPairs;
  const int64_t rowsPerBlock = (rows + blocksPerGroup - 1) / blocksPerGroup;
  bool nan = decodeB(job, 0, groupSteps(0), 0, rows, wbufs[0]);

  Pending pending{};
  bool hasPending = false;
  int cur = 0;
  for (int64_t g = 0; g < job.groups && !nan; ++g) {
    compilerBarrier();  // wbufs[g % 2] is complete
    const int64_t kSteps = groupSteps(g);
    const uint16_t* wbuf = wbufs[g & 1];
    uint16_t* wnext = wbufs[(g + 1) & 1];
    const int64_t nextK0 = (g + 1) * kGroup, nextSteps = g + 1 < job.groups ? groupSteps(g + 1) : 0;
    const float* saRow = job.saT + g * job.ldSaT + job.m0;
    int64_t block = 0;
    for (int64_t mp = 0; mp < mTiles; mp += 2) {
      const int mt = static_cast<int>(minI(2, mTiles - mp));
      const uint32_t* act = job.act + (g * job.mTiles + job.m0 / 16 + mp) * actTileStride;
      for (int64_t np = 0; np < nPairs; ++np, ++block) {
        const uint16_t* w = wbuf + np * 32 * kWbufLd;
        if (mt == 2) tileBlock<2>(w, act, actTileStride, kSteps);
        else tileBlock<1>(w, act, actTileStride, kSteps);
        // Vector work while the tile unit runs this block: promote the
        // previous block and decode a slice of the next group's B, both
        // before this block's tile stores (loads wait behind a pending tile
        // store).
        if (hasPending) promote(pending);
        if (nextSteps > 0) {
          const int64_t r0 = block * rowsPerBlock, r1 = minI(rows, r0 + rowsPerBlock);
          if (r0 < r1) nan |= decodeB(job, nextK0, nextSteps, r0, r1, wnext);
        }
        float* cbuf = job.cbuf + cur * 1024;
        if (mt == 2) storeTiles<2>(cbuf);
        else storeTiles<1>(cbuf);
        pending.cbuf = cbuf;
        pending.acc = job.acc + (np * mTiles + mp) * kAccTile;
        pending.saT = saRow + mp * 16;
        pending.sb = job.sb[((job.n0 + np * 32) / kGroup) * job.groups + g];
        pending.mt = mt;
        pending.first = g == 0;
        hasPending = true;
        cur ^= 1;
      }
    }
  }
  _tile_release();
  if (nan) return true;
  if (hasPending) promote(pending);
  writeBlock(job, mTiles);
  return false;
}

namespace {

// B bytes of a strip's rows are prefetched this many groups ahead of the
// decode (past a row's end: the same offset into the next strip's rows).
constexpr int64_t kStripPrefetchGroups = 3;

// Where the strip walk is: strip rows [n, n + 32), K group g.
struct StripPos {
  int64_t n, g;
};

// Decodes K steps s, s + 1 (64 k) of group pos.g for the 32 rows of strip
// pos.n into w (rows past N as zeros; k past K as zeros), and prefetches
// rows [8 (s % 4), 8 (s % 4) + 16) a few groups ahead.
inline void decodeStripSteps2(const AmxStripJob& job, StripPos pos, int64_t s, uint16_t* w, __m512i& nan) {
  int64_t pfRow = pos.n, pfPos = (pos.g + kStripPrefetchGroups) * kGroup;
  if (pfPos >= job.K) {
    pfRow += kAmxStripRows;
    pfPos -= job.K;
  }
  if (pfPos < job.K) {
    const int64_t r0 = 8 * (s & 3);
    for (int64_t r = r0; r < r0 + 16 && pfRow + r < job.N; ++r) {
      const char* p = reinterpret_cast<const char*>(job.b + (pfRow + r) * job.K + pfPos);
      _mm_prefetch(p, _MM_HINT_T0);
      _mm_prefetch(p + 64, _MM_HINT_T0);
    }
  }
  const int64_t K = job.K;
  const int64_t k = pos.g * kGroup + s * kAmxKStep;
  const int64_t valid = minI(kAmxStripRows, job.N - pos.n);
  const uint8_t* src = job.b + pos.n * K + k;
  uint16_t* out = w + s * 32;
  __m512i seen = nan;
  if (k + 64 <= K) {
    for (int64_t r = 0; r < valid; ++r) {
      const __m512i bytes = _mm512_loadu_si512(src + r * K);
      seen = trackNan64(seen, bytes);
      bf16FromFp8x64(bytes, out + r * kWbufLd);
    }
  } else {
    const __mmask64 m = K - k >= 64 ? ~__mmask64(0) : (__mmask64(1) << (K - k)) - 1;
    for (int64_t r = 0; r < valid; ++r) {
      const __m512i bytes = _mm512_maskz_loadu_epi8(m, src + r * K);
      seen = trackNan64(seen, bytes);
      bf16FromFp8x64(bytes, out + r * kWbufLd);
    }
  }
  nan = seen;
  for (int64_t r = valid; r < kAmxStripRows; ++r) {
    _mm512_store_si512(out + r * kWbufLd, _mm512_setzero_si512());
    _mm512_store_si512(out + r * kWbufLd + 32, _mm512_setzero_si512());
  }
}

// D[m, n .. n + 32) = acc (tile (t, h) = acc + (2t + h) * 256, [16 n][16 m]).
void writeStrip(const AmxStripJob& job, int64_t n) {
  for (int h = 0; h < 2; ++h) {
    const int64_t nb = n + 16 * h;
    if (nb >= job.N) break;
    const int64_t cols = minI(16, job.N - nb);
    const __mmask16 colMask = static_cast<__mmask16>((1u << cols) - 1u);
    for (int64_t t = 0; t < job.mTiles; ++t) {
      const int64_t rows = minI(16, job.M - 16 * t);
      const float* acc = job.acc + (2 * t + h) * 256;
      __m512 r[16];
      for (int j = 0; j < 16; ++j) r[j] = _mm512_load_ps(acc + 16 * j);
      transpose16x16(r);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t m = 16 * t + i;
        if (job.bf16) {
          uint16_t* out = reinterpret_cast<uint16_t*>(job.d) + m * job.N + nb;
          _mm256_mask_storeu_epi16(out, colMask, bf16FromFloat16(r[i]));
        } else {
          float* out = reinterpret_cast<float*>(job.d) + m * job.N + nb;
          _mm512_mask_storeu_ps(out, colMask, r[i]);
        }
      }
    }
  }
}

// One K step of the C tiles: 32 (n) x 16 MT (m) += B step x A step.
template <int MT>
inline void tileStep(const uint16_t* w, const uint32_t* act, int64_t actTileStride) {
  _tile_loadd(4, w, kWbufLd * 2);
  _tile_loadd(5, w + 16 * kWbufLd, kWbufLd * 2);
  _tile_loadd(6, act, 64);
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 5, 6);
  if (MT == 2) {
    _tile_loadd(7, act + actTileStride, 64);
    _tile_dpbf16ps(2, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  }
}

// The walk is software-pipelined one group deep: while the tiles run K step
// s of the current group, the vector units decode step s of the next group
// (of this strip, or the next strip's first), so each tile load reads rows
// decoded a whole group earlier (long out of the store buffer) and the
// reorder buffer never waits long on a tile instruction.
template <int MT>
bool runStrips(const AmxStripJob& job) {
  const int64_t actTileStride = kStepsPerGroup * kAmxTileWords;
  auto groupSteps = [&](int64_t g) { return minI(kStepsPerGroup, (job.K - g * kGroup + kAmxKStep - 1) / kAmxKStep); };
  uint16_t* wbufs[2] = {job.wbuf, job.wbuf + kAmxStripRows * kWbufLd};
  __m512i nan = _mm512_setzero_si512();
  int cur = 0;
  {
    const StripPos first{job.n0, 0};
    for (int64_t s = 0; s < groupSteps(0); s += 2) decodeStripSteps2(job, first, s, wbufs[0], nan);
  }
  for (int64_t n = job.n0; n < job.n1; n += kAmxStripRows) {
    const float* sbRow = job.sb + (n / kGroup) * job.groups;
    Pending pending{};
    for (int64_t g = 0; g < job.groups; ++g) {
      const StripPos next = g + 1 < job.groups ? StripPos{n, g + 1} : StripPos{n + kAmxStripRows, 0};
      const bool hasNext = next.n < job.n1;
      const int64_t kSteps = groupSteps(g), nextSteps = hasNext ? groupSteps(next.g) : 0;
      const uint16_t* w = wbufs[cur];
      uint16_t* wnext = wbufs[cur ^ 1];
      const uint32_t* act = job.act + g * MT * actTileStride;
      compilerBarrier();
      _tile_zero(0);
      _tile_zero(1);
      if (MT == 2) {
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int64_t s = 0; s < kStepsPerGroup; ++s) {
        if (s < kSteps) tileStep<MT>(w + s * 32, act + s * kAmxTileWords, actTileStride);
        compilerBarrier();
        if (s == 0 && g > 0) promote(pending);
        if (s % 2 == 0 && s < nextSteps) decodeStripSteps2(job, next, s, wnext, nan);
        compilerBarrier();
      }
      float* cbuf = job.cbuf + (g & 1) * 1024;
      storeTiles<MT>(cbuf);
      compilerBarrier();
      pending.cbuf = cbuf;
      pending.acc = job.acc;
      pending.saT = job.saT + g * job.ldSaT;
      pending.sb = sbRow[g];
      pending.mt = MT;
      pending.first = g == 0;
      cur ^= 1;
    }
    promote(pending);
    writeStrip(job, n);
    if (sawNan64(nan)) return true;
  }
  return sawNan64(nan);
}

}  // namespace

bool amxRunStrips(const AmxStripJob& job) {
  loadTileConfig();
  const bool nan = job.mTiles == 2 ? runStrips<2>(job) : runStrips<1>(job);
  _tile_release();
  return nan;
}

double amxBurn(int64_t iters, float* sink) {
  loadTileConfig();
  alignas(64) static const uint16_t kOnes[16 * 32] = {};  // zeros: the values do not matter
  alignas(64) float out[256];
  _tile_loadd(4, kOnes, 64);
  _tile_loadd(5, kOnes, 64);
  _tile_loadd(6, kOnes, 64);
  _tile_loadd(7, kOnes, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t it = 0; it < iters; ++it) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 5, 6);
    _tile_dpbf16ps(2, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, 64);
  _tile_release();
  *sink = out[0];
  return static_cast<double>(iters) * 4 * (16.0 * 16 * 32 * 2);
}

}  // namespace moe::cpu::fp8gemm
