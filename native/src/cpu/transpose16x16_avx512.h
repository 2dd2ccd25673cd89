// A 16 x 16 transpose of 32-bit elements in 16 zmm registers, for the AVX-512
// kernels (AMX packing, the AVX512_BF16 GEMM's weight panels). Include it only
// AFTER a translation unit's `#pragma GCC target(... avx512f ...)`: the
// anonymous namespace keeps each copy private to its (AVX-512) file.
#pragma once

#include <immintrin.h>

namespace moe::cpu {
namespace {

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
