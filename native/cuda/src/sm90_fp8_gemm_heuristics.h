// Config heuristics for the Hopper FP8 GEMM, kept apart from the kernels and
// free of CUDA headers (unit-tested by native/cuda/test/layouts_test.cpp).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "gemm_problem.h"

namespace moe_cuda {

struct Sm90Choice {
  uint32_t block_m;  // 64 or 128 (BLOCK_N = 128, BLOCK_K = 128)
};

// Whether the Hopper kernels can take `p`. They need:
//   - K % 128 == 0: one BLOCK_K = 128 stage per scale group, no K tail
//     (other K, still multiples of 16, run on the SIMT kernels),
//   - N % 8 == 0: the TMA store's row pitch N * sizeof(out) must be a multiple
//     of 16 bytes,
//   - A, B, D 16-byte aligned (TMA global addresses),
//   - contiguous: segments aligned to a multiple of 64 rows (segment_align),
//     as a block of rows takes the group of its first row,
//   - every extent and byte stride inside TMA's limits (dims <= 2^32,
//     strides < 2^40) and the tile count inside int32.
// On false writes the reason into (why, len).
bool sm90_fp8_gemm_eligible(const GemmProblem& p, char* why, size_t len);

// Picks BLOCK_M for `p` on a GPU with `sm_count` SMs: the candidate (64 or
// 128) whose persistent waves waste the least of the padded tile area; ties go
// to 128 (more reuse of each B tile). The masked layout sizes tiles by
// `expected_m` when given (decode: few rows per expert), else by Mmax.
Sm90Choice sm90_fp8_gemm_choose(const GemmProblem& p, int sm_count);

}  // namespace moe_cuda
