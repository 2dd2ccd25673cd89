// AMX-BF16 kernel of the router projection (router_logits_amx.h).
//
// Tiles (palette 1, every tile 16 rows x 64 bytes), as in gemm_fp8_amx.cpp
// the big operand (w, [E, H] K-major) is the row operand, so it is loaded
// straight from memory with no packing; the few tokens are packed once per
// block into the VNNI operand and the tiles hold logits^T:
//   tmm0..3  C: 16 experts x 16 tokens f32 (expert tile h, token tile t -> tmm(2t + h))
//   tmm4, 5  w rows e .. e+15 and e+16 .. e+31, 32 k (bf16)
//   tmm6, 7  x token tiles 0, 1: 16 k-pairs x 16 tokens (VNNI)
#include "cpu/router_logits_amx.h"

#include <immintrin.h>

#include <cstdint>

#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,amx-tile,amx-bf16")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu/amx_tiles.h"  // after the target pragma: its inline functions are AMX code

namespace moe::cpu {
namespace {

constexpr int64_t kTileWords = 256;  // one packed token tile: 16 k-pairs x 16 tokens

// act[s][t] = token tile t of K step s in VNNI form: the dword
// (x[16 t + r, 32 s + 2 p], x[16 t + r, 32 s + 2 p + 1]) at [p][r]; tokens
// past `tokens` as zeros.   act: [hidden / 32][2][256] uint32.
void packTokens(const uint16_t* x, int64_t tokens, int64_t hidden, uint32_t* act) {
  const int64_t tiles = (tokens + 15) / 16;
  for (int64_t s = 0; s < hidden / 32; ++s) {
    for (int64_t t = 0; t < tiles; ++t) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t token = 16 * t + i;
        r[i] = token < tokens ? _mm512_loadu_ps(x + token * hidden + 32 * s) : _mm512_setzero_ps();
      }
      transpose16x16(r);  // r[p] = k-pair p of the 16 tokens
      uint32_t* out = act + (2 * s + t) * kTileWords;
      for (int p = 0; p < 16; ++p) _mm512_store_ps(reinterpret_cast<float*>(out + 16 * p), r[p]);
    }
  }
}

// K steps ahead that a decode block (MT == 1) prefetches its rows of w into
// L2: a tile load of 16 rows that miss waits for all 16 lines, and the
// hardware prefetchers do not follow 32 rows read 64 bytes at a time. Cold
// weights, E = 256, H = 896, one token: 67-70 -> 44-56 us per call on a noisy
// VM (2, 4 and 8 steps ahead measured 44, 45 and 61; into L1: 47-51).
constexpr int64_t kPrefetchSteps = 4;

// Prefetches the 16 H rows' bytes of w at K step s into L2.
template <int H>
inline void prefetchStep(const uint16_t* w, int64_t e, int64_t hidden, int64_t s) {
  for (int r = 0; r < 16 * H; ++r) _mm_prefetch(reinterpret_cast<const char*>(w + (e + r) * hidden + 32 * s), _MM_HINT_T1);
}

// C tiles for experts [e, e + 16 H) x token tiles [0, MT) over all of K.
template <int MT, int H>
void expertBlock(const uint16_t* w, int64_t e, int64_t hidden, const uint32_t* act) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t stride = hidden * 2;  // bytes between w rows
  const int64_t steps = hidden / 32;
  if (MT == 1) {
    for (int64_t s = 0; s < kPrefetchSteps && s < steps; ++s) prefetchStep<H>(w, e, hidden, s);
  }
  for (int64_t s = 0; s < steps; ++s) {
    if (MT == 1 && s + kPrefetchSteps < steps) prefetchStep<H>(w, e, hidden, s + kPrefetchSteps);
    const uint16_t* rows = w + e * hidden + 32 * s;
    const uint32_t* tokens = act + 2 * s * kTileWords;
    _tile_loadd(4, rows, stride);
    if (H == 2) _tile_loadd(5, rows + 16 * hidden, stride);
    _tile_loadd(6, tokens, 64);
    _tile_dpbf16ps(0, 4, 6);
    if (H == 2) _tile_dpbf16ps(1, 5, 6);
    if (MT == 2) {
      _tile_loadd(7, tokens + kTileWords, 64);
      _tile_dpbf16ps(2, 4, 7);
      if (H == 2) _tile_dpbf16ps(3, 5, 7);
    }
  }
}

// logits[t, e + 16 h + j] = cbuf tile (t / 16, h)[j][t % 16] for t < tokens.
void writeLogits(const float* cbuf, int64_t tokens, int64_t e, int h, float* logits, int64_t ldLogits) {
  for (int64_t t = 0; 16 * t < tokens; ++t) {
    const float* tile = cbuf + (2 * t + h) * kTileWords;
    __m512 r[16];
    for (int j = 0; j < 16; ++j) r[j] = _mm512_load_ps(tile + 16 * j);
    transpose16x16(r);  // r[i] = the 16 experts of token 16 t + i
    for (int64_t i = 0; i < 16 && 16 * t + i < tokens; ++i) {
      _mm512_storeu_ps(logits + (16 * t + i) * ldLogits + e + 16 * h, r[i]);
    }
  }
}

template <int MT, int H>
void runExperts(const uint16_t* w, int64_t e, int64_t hidden, const uint32_t* act, float* cbuf, int64_t tokens,
                float* logits, int64_t ldLogits) {
  expertBlock<MT, H>(w, e, hidden, act);
  _tile_stored(0, cbuf, 64);
  if (H == 2) _tile_stored(1, cbuf + kTileWords, 64);
  if (MT == 2) {
    _tile_stored(2, cbuf + 2 * kTileWords, 64);
    if (H == 2) _tile_stored(3, cbuf + 3 * kTileWords, 64);
  }
  compilerBarrier();
  for (int h = 0; h < H; ++h) writeLogits(cbuf, tokens, e, h, logits, ldLogits);
}

}  // namespace

void amxRouterBlock(const uint16_t* x, int64_t tokens, const uint16_t* w, int64_t e0, int64_t e1,
                    int64_t hidden, float* logits, int64_t ldLogits, uint32_t* scratch) {
  uint32_t* act = scratch;                                              // [hidden / 32][2][256]
  float* cbuf = reinterpret_cast<float*>(scratch + hidden / 32 * 2 * kTileWords);  // [4][16][16]
  packTokens(x, tokens, hidden, act);
  compilerBarrier();
  loadTileConfig();
  const bool twoTokenTiles = tokens > 16;
  for (int64_t e = e0; e < e1; e += 32) {
    const bool twoExpertTiles = e + 16 < e1;
    if (twoTokenTiles) {
      if (twoExpertTiles) runExperts<2, 2>(w, e, hidden, act, cbuf, tokens, logits, ldLogits);
      else runExperts<2, 1>(w, e, hidden, act, cbuf, tokens, logits, ldLogits);
    } else {
      if (twoExpertTiles) runExperts<1, 2>(w, e, hidden, act, cbuf, tokens, logits, ldLogits);
      else runExperts<1, 1>(w, e, hidden, act, cbuf, tokens, logits, ldLogits);
    }
  }
  _tile_release();
}

}  // namespace moe::cpu
