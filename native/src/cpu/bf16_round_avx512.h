// f32 -> bf16 on 16 lanes, for the AVX-512 and AMX GEMM kernels' outputs.
// Include it only AFTER a translation unit's `#pragma GCC target(...
// avx512f, avx512bw ...)`: the anonymous namespace keeps each copy private
// to its (AVX-512) file.
#pragma once

#include <immintrin.h>

namespace moe::cpu {
namespace {

// Round to nearest even on the bit pattern, NaN kept quiet (as bf16FromFloat).
inline __m256i bf16FromFloat16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 isNan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)),
                                                  _mm512_set1_epi32(0x7F800000));
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(isNan, rounded, quiet));
}

}  // namespace
}  // namespace moe::cpu
