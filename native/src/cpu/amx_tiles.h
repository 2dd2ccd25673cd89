// AMX tile helpers shared by the AMX kernels (gemm_fp8_amx.cpp,
// router_logits_amx.cpp). Include it only AFTER a translation unit's
// `#pragma GCC target(... amx-tile, amx-bf16, avx512 ...)`: everything here
// is compiled for that target, and the anonymous namespace keeps each copy
// private to its file so that no AMX code can be linked into a caller that
// runs on other CPUs.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace moe::cpu {
namespace {

// The tile palette-1 configuration: 8 tiles of 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t startRow;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

inline void loadTileConfig() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  // NOTE: GCC 12 does not model _tile_loadconfig as reading *cfg: at -O2 it
  // dropped the loop's stores as dead, leaving every tile unconfigured, and
  // the first tile instruction faulted (SIGILL). Make cfg visibly read first.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// The tile loads below are asm without a memory clobber: keep the compiler
// from sinking the vector stores that fill their buffers past them.
inline void compilerBarrier() { __asm__ volatile("" ::: "memory"); }

// ---- 16 x 16 transposes (32-bit elements) --------------------------------------

inline void transpose16x16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // rows 4q .. 4q+3: u[4q + c] holds column c of each lane
    const __m512d a0 = _mm512_castps_pd(t[4 * q]), a1 = _mm512_castps_pd(t[4 * q + 1]);
    const __m512d b0 = _mm512_castps_pd(t[4 * q + 2]), b1 = _mm512_castps_pd(t[4 * q + 3]);
    u[4 * q + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, b0));
    u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, b0));
    u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, b1));
    u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, b1));
  }
  for (int i = 0; i < 4; ++i) {
    const __m512 vLo = _mm512_shuffle_f32x4(u[i], u[4 + i], 0x88);
    const __m512 vHi = _mm512_shuffle_f32x4(u[i], u[4 + i], 0xDD);
    const __m512 wLo = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0x88);
    const __m512 wHi = _mm512_shuffle_f32x4(u[8 + i], u[12 + i], 0xDD);
    r[i] = _mm512_shuffle_f32x4(vLo, wLo, 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(vLo, wLo, 0xDD);
    r[i + 4] = _mm512_shuffle_f32x4(vHi, wHi, 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(vHi, wHi, 0xDD);
  }
}

}  // namespace
}  // namespace moe::cpu
