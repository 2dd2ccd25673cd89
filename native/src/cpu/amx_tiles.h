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

#include "cpu/transpose16x16_avx512.h"  // transpose16x16, for the kernels that include this header

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

}  // namespace
}  // namespace moe::cpu
