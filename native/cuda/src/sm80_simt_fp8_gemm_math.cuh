// The SIMT FP8 GEMMs' per-element math, callable on the host and the device:
// the kernels in sm80_simt_fp8_gemm.cu evaluate exactly these functions, and
// native/cuda/test/simt_math_test.cu checks them on the CPU against an
// independent float64 reference of SPEC.md (no GPU needed).
#pragma once

#include <cuda_fp8.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define MOE_SIMT_HD __host__ __device__ __forceinline__
#else
#define MOE_SIMT_HD inline
#endif

namespace moe_cuda {
namespace simt {

struct Operands {
  const uint8_t* a;            // dense [M, K]; contiguous [R, K]; masked [G, Mmax, K]   fp8 e4m3
  const float* sa;             // [rows of A, ceil(K/128)] f32
  const uint8_t* b;            // [G, N, K] fp8 e4m3 (G = 1 for dense)
  const float* sb;             // [G, ceil(N/128), ceil(K/128)] f32
  const int32_t* group_index;  // contiguous: [R]
  const int32_t* masked_m;     // masked: [G]
  int64_t rows;                // dense M, contiguous R, masked Mmax
  int64_t n, k, groups;
};

MOE_SIMT_HD float fp8_e4m3_to_float(uint8_t bits) {
  __nv_fp8_e4m3 v;
  v.__x = bits;
  return static_cast<float>(v);
}

// sum_g sa_row[g] * sb_row[g] * sum_{k in group g} a_row[k] * b_row[k], in f32,
// groups and k in increasing order.
//   a_row, b_row: [K] fp8; sa_row, sb_row: [ceil(K/128)] f32
MOE_SIMT_HD float block_scaled_dot(const uint8_t* a_row, const float* sa_row, const uint8_t* b_row,
                                   const float* sb_row, int64_t k) {
  float acc = 0.0f;
  const int64_t k_blocks = (k + 127) / 128;
  for (int64_t g = 0; g < k_blocks; ++g) {
    const int64_t k0 = g * 128;
    const int64_t k1 = (k0 + 128 < k) ? k0 + 128 : k;
    float part = 0.0f;
    for (int64_t kk = k0; kk < k1; ++kk) part = fmaf(fp8_e4m3_to_float(a_row[kk]), fp8_e4m3_to_float(b_row[kk]), part);
    acc = fmaf(sa_row[g] * sb_row[g], part, acc);
  }
  return acc;
}

// D[row, col] of the dense GEMM.
MOE_SIMT_HD float dense_element(const Operands& o, int64_t row, int64_t col) {
  const int64_t kb = (o.k + 127) / 128;
  return block_scaled_dot(o.a + row * o.k, o.sa + row * kb, o.b + col * o.k, o.sb + (col / 128) * kb, o.k);
}

// D[row, col] of the contiguous grouped GEMM: B[group_index[row]]; an index
// outside [0, G) (-1 marks padding) gives 0.
MOE_SIMT_HD float contiguous_element(const Operands& o, int64_t row, int64_t col) {
  const int64_t g = o.group_index[row];
  if (g < 0 || g >= o.groups) return 0.0f;
  const int64_t kb = (o.k + 127) / 128;
  const int64_t nb = (o.n + 127) / 128;
  return block_scaled_dot(o.a + row * o.k, o.sa + row * kb, o.b + (g * o.n + col) * o.k, o.sb + (g * nb + col / 128) * kb,
                          o.k);
}

// D[g, row, col] of the masked grouped GEMM: rows at or past masked_m[g] give 0.
MOE_SIMT_HD float masked_element(const Operands& o, int64_t g, int64_t row, int64_t col) {
  if (row >= static_cast<int64_t>(o.masked_m[g])) return 0.0f;
  const int64_t kb = (o.k + 127) / 128;
  const int64_t nb = (o.n + 127) / 128;
  const int64_t grow = g * o.rows + row;
  return block_scaled_dot(o.a + grow * o.k, o.sa + grow * kb, o.b + (g * o.n + col) * o.k,
                          o.sb + (g * nb + col / 128) * kb, o.k);
}

}  // namespace simt
}  // namespace moe_cuda
